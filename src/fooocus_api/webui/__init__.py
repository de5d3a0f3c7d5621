"""The WebUI: a static page (HTML, CSS, JavaScript modules in ``static/``) served on the WebUI
port. The page talks only to the public REST API on the API port (cross-origin, allowed by
the API's CORS), with the API key in the ``X-API-KEY`` header and single-use tickets for
``EventSource``. No build step, no CDN: every asset is served from the package.
"""

from fooocus_api.webui.app import STATIC_DIR, create_webui_app

__all__ = ["STATIC_DIR", "create_webui_app"]
