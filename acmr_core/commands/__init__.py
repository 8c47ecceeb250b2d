"""One module per ``acmr`` sub-command; see :mod:`acmr_core.cli`."""
