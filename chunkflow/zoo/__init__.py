"""bioimage.io model packages: read with ``bioimageio.spec`` (the optional ``bioimageio`` extra),
run by our own engine over volumes of any size (``package``: what a package says;
``processing``: its pre- and post-processing; ``statistics``: the input's dataset-wide
statistics). Its network is ``chunkflow.engine.package_network``, its own test
``chunkflow.plan.package_test``."""
