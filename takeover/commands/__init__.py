"""One module per `takeover` sub-command; each exposes `register(subparsers)`."""
