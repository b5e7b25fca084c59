"""A Django email backend that sends through the first provider that works."""
