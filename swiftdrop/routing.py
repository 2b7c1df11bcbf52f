"""Per-recipient routing: which destinations get a copy of a message."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Delivery:
    """One copy to store: a destination and the recipients it is stored for."""

    destination: object
    recipients: tuple


class Router:
    """Maps envelope recipients to destinations, case-insensitively on the full address."""

    def __init__(self, config):
        self.catch_all = config.catch_all
        self._by_address = {
            address: destination
            for destination in config.destinations
            for address in destination.recipients
        }

    def routes(self, recipient):
        """True when a named section lists `recipient` (not just the catch-all)."""
        return recipient.casefold() in self._by_address

    def destination_for(self, recipient):
        return self._by_address.get(recipient.casefold(), self.catch_all)

    def route(self, recipients):
        """Group recipients into one Delivery per distinct account and container.

        A message for several recipients of the same destination is stored once,
        not once per recipient; order follows the envelope so replies are stable.
        """
        groups = {}
        for recipient in recipients:
            destination = self.destination_for(recipient)
            entry = groups.setdefault(destination.target, (destination, []))
            entry[1].append(recipient)
        return [Delivery(destination, tuple(rcpts)) for destination, rcpts in groups.values()]
