"""oms: an event-sourced order-management engine (see the README)."""

__version__ = "0.2.0.dev0"
