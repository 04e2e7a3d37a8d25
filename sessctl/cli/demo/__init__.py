"""`sessctl demo`: sessions born, given lives, expiring and purged, over real HTTP.

:func:`~.server.running` starts the example app (:mod:`.app`: the seed's
examples behind :class:`~sessctl.SessionMiddleware`) on 127.0.0.1, on a fresh
SQLite file in a temporary folder with a throwaway secret key.
:func:`~.tour.tour` drives simulated browsers (urllib with real
``http.cookiejar`` jars) through it and runs the real command line in-process
to show what an operator sees; :func:`~.tour.serve` leaves the app running for
a person's browser.
"""
