"""The web dashboard (issue "Web dashboard"): server-rendered pages under ``/app`` for
users, creators and admins, over the same services as the HTTP API.

Jinja2 templates (``templates/``), our own small CSS and JavaScript (``static/``), charts
drawn by Plotly from the installed ``plotly`` package (no CDN). Sessions are sealed
cookies that carry an API key's id and digest, never the key (:mod:`.session`); every page
re-authenticates the key and applies the API's scoping (another user's page → 404, an admin
page for a user key → 403).

Modules: :mod:`.app` (the sub-application, its error pages and static files),
:mod:`.session` (cookies, CSRF, the signed-in viewer), :mod:`.render` (templates, flash
messages, redirects), :mod:`.views` (display strings, charts, form values), :mod:`.forms`,
and one module of pages per area: :mod:`.auth_pages`, :mod:`.wallet`, :mod:`.analytics`,
:mod:`.earnings` (a creator's earnings and payouts), :mod:`.admin` (pricing, purchases),
:mod:`.admin_platform` (the platform overview and the payout queue).
"""

from __future__ import annotations

from modelbank.web.app import create_web_app

__all__ = ["create_web_app"]
