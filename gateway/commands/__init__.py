"""Sub-commands of the `gateway` CLI; each module defines register(subparsers)."""
