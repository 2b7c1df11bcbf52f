"""SwiftDrop: a Postfix before-queue filter that stores every accepted message in Swift."""

__version__ = "0.1.0"
