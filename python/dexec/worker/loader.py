"""Loading the task modules a worker was started with: dotted module names
(imported as usual) or paths of .py files (loaded under their file name, so
`squares.py` registers "squares.square", as a client running the script
names it). This is the only place a worker imports anything by name, and
the names come from its command line, never from a message."""
import importlib
import importlib.util
import os
import sys


def load_modules(specs):
    for spec in specs:
        if spec.endswith(".py") or os.sep in spec:
            path = os.path.abspath(spec)
            name = os.path.splitext(os.path.basename(path))[0]
            if name in sys.modules:
                continue
            d = os.path.dirname(path)
            if d not in sys.path:
                sys.path.insert(0, d)  # its own imports resolve beside it
            s = importlib.util.spec_from_file_location(name, path)
            if s is None:
                raise ImportError("cannot load task module %s" % spec)
            m = importlib.util.module_from_spec(s)
            sys.modules[name] = m
            try:
                s.loader.exec_module(m)
            except BaseException:
                del sys.modules[name]
                raise
        else:
            importlib.import_module(spec)
