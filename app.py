"""Popcorn studio: a one-line idea -> plan -> titled micro-video -> predicted popularity (Gradio; HF Space entry).

    python app.py [--host 127.0.0.1] [--port 7860]      (or POPCORN_HOST/POPCORN_PORT, GRADIO_SERVER_NAME/PORT)
    python -m popcorn studio --port 7860                (the same, from an installed package too)

The app lives in the package (popcorn/ui/app.py) so an installed wheel serves it as well: there, PAGES lists the page
modules (each popcorn/ui/<page>.py builds one tab) and ROUTERS the extra FastAPI routes served beside them.
"""

import gc

if __name__ == "__main__":
    gc.disable()  # no cyclic collection while ~1,400 modules load (~10% of the start); main() turns it back on

from popcorn.ui.app import PAGES, ROUTERS, build, create_app, main  # noqa: E402, F401

if __name__ == "__main__":
    main()
