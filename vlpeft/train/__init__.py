"""Training: the task-agnostic loop (``loop.fit``), checkpoint + exact resume, DDP, and the task bindings.

Import the submodules directly (``vlpeft.train.run``, ``vlpeft.train.loop``, ``vlpeft.train.predict``); this
package imports nothing heavy so that ``vlpeft --help`` stays fast.
"""
