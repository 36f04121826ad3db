"""The challenge file formats as data: readers and (validating) writers."""
