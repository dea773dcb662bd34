"""Plain-Python AI functions: Arrow in, Arrow out."""
