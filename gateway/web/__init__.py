"""The recruiters' web app, served by the gateway at ``/``: server-rendered pages (Jinja2)
that htmx (2.x, vendored in ``static/``) updates in place — no build step, nothing fetched
from outside the gateway.

- ``pages.py``  the routes Find workers (``/``), SQL (``/sql``) and Status (``/status``),
  and what every page shares; each route answers a whole page, or only its changing part when htmx
  asks (``HX-Request``), so every URL can be bookmarked and works without JavaScript.
- ``datasets.py``  Datasets (``/datasets``, ``/datasets/{name}`` and its upload form) and a
  job's progress fragment (``/jobs/{id}``).
- ``forms.py``  what the pages compute: filter controls built from a dataset's columns and
  their SQL predicate, result cards, snippet marks.

The pages call the same functions as the JSON routes (``gateway.routes``), never NATS
directly. Imports like the rest of ``gateway``.
"""
