"""`chute web`: the web page and JSON API (contract §13), a process of its own that the daemon never imports."""
