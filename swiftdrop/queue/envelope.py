"""Reading a claimed message's whole envelope: all its recipients, wherever they are kept."""

from .. import envelope


def read_recipients(connection, container, metadata):
    """Every recipient of a message (swiftdrop.envelope), with one GET only for a long list."""
    return envelope.recipients(
        metadata, lambda path: connection.get_object(container, path)[1])
