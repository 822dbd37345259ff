"""The ``emolab`` command (:mod:`~emolab.cli.main`), the headless notebook runner (:mod:`~emolab.cli.notebooks`) and the cache tool (:mod:`~emolab.cli.cache`)."""
