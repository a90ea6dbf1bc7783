"""Driver classes, one module per SR type; drivers/<Type>SR runs one of them."""
