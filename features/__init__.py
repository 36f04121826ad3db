"""Extract once, cache forever: media decoding, frame and audio feature extractors, the store."""
