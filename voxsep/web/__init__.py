"""`voxsep serve`: a local web page that counts and separates the talkers of uploaded recordings.

Two layers, so the part that touches files and the model runs and tests without the web extra:

* :mod:`voxsep.web.jobs` - :class:`~voxsep.web.jobs.SeparationService`: one
  :class:`separation.inference.Separator` (the CLI's), one worker thread and a job queue, size and
  duration limits, a work folder that it alone writes (random job ids, fixed file names) and that
  it empties after a set time.
* :mod:`voxsep.web.app` - the Starlette app (the ``[web]`` extra) that serves the page in
  ``static/`` (plain HTML, JS and CSS) and a small JSON API over the service.
"""
