"""Reading a class description (words) into attribute values, with each bundle's own attribute names."""
