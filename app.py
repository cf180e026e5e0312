"""EchoGen app: one echo frame + a chosen ejection fraction -> beating echo loops, with an EF readout.

    python app.py [--share] [--host 0.0.0.0] [--port 7860] [--weights DIR] [--device cpu|cuda] ...

The same as the `echogen-app` console script; the app itself is echogen/ui/app.py.
"""
import sys

from echogen.ui.app import main

if __name__ == "__main__":
    sys.exit(main())
