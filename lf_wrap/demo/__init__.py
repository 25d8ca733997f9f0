"""The demo (the whole study at small scale on CPU) and the models it and the tests run on."""
