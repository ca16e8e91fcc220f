"""How complaints come in: starting a complaint's workflow, and reading a mail (the info@ mailbox)."""
