"""Personal data of customers (GDPR art. 17): encrypted fields, per-assignment keys, crypto-shredding.

A meter's assignment to a customer (``assignments``) is stored as a ``MeterAssigned`` event whose
personal fields are AES-GCM ciphertext (``crypto``) under a data key held in a key store (``keys``).
Forgetting a customer destroys that key: the immutable events stay, their personal fields become
unreadable everywhere at once, and a ``PersonalDataErased`` event records that it happened. The
command-side unique index (``unique_index``) keeps activation codes and meter ids unique per fleet.

Kept free of imports on purpose: ``gateway.domain.mapper`` imports ``gateway.personal.events`` to register
its event types, and a package ``__init__`` that imported the store, the keys or crypto would load all
of them with every event decode.
"""
