"""The studio: the web page served at ``/`` by ``aat up`` / ``aat serve``.

Server-rendered Jinja templates plus small ES modules and pinned, vendored libraries
(``static/vendor/``, see ``static/vendor/VENDORED.md``); no build step. The page talks to the
service only through the public REST API and its Server-Sent Events, so everything it does a
script can do. Routes and security headers live in :mod:`service.studio.routes`.
"""
