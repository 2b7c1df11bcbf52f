"""SwiftDrop: a Postfix before-queue filter that stores every accepted message in Swift."""

# The release this tree is, or the next one with .dev0 between releases;
# scripts/release sets it, the wheel and `swiftdrop --version` read it.
__version__ = "0.1.0.dev0"
