"""chunkflow: block-wise 3D convnet inference over volumes too large for one machine."""

__version__ = "0.1.0"
