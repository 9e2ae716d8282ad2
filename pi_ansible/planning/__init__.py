"""Pure decisions: they take facts and return plans, and are tested without a host."""
