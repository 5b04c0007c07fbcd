"""Database access: connection pools and versioned schema migrations."""
