"""Plain functions the tests share (conftest.py turns the common cases into fixtures). Nothing
here is a test; no test file imports another test file."""
