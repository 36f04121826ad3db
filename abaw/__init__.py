"""abaw: from the ABAW organisers' data to accepted submission files.

The core package: configuration, task definitions, dataset readers, metrics, folds and the
command line. Feature extraction lives in ``features``, models in ``fusion``, file formats in
``submissions``.
"""

__version__ = "0.1.0"
