"""``ds4d view``: an interactive browser viewer of a run (viser).

* :mod:`~ds4d_pl.viewer.source`: what the viewer shows, as plain arrays behind a small protocol
  (:class:`~ds4d_pl.viewer.source.ViewerSource`), so the GUI never touches a model;
* :mod:`~ds4d_pl.viewer.energy`: DSFD's dynamic energy sampled at the Gaussians, and its colours;
* :mod:`~ds4d_pl.viewer.load`: the one adapter from a run directory (or checkpoint) to a source;
* :mod:`~ds4d_pl.viewer.app`: the viser GUI (time slider, play/pause, cameras, energy toggle).
"""
