"""One module per ``ds4d`` command; :mod:`ds4d_pl.cli` imports a command only when it runs."""
