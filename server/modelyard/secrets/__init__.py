"""Provider credentials: envelope encryption at rest, references resolved when used.

* ``keys``: MasterKey, the root secret (MODELYARD_MASTER_KEY or DATA_DIR/master.key) and the
  HKDF-derived KEK of every version;
* ``envelope``: seal / open_sealed / rewrap, AES-256-GCM with a random data key per secret and the
  secret id (and KEK version) bound as associated data;
* ``references``: env:NAME, file:/path and vault:mount/path#field (HashiCorp Vault KV v2, hvac);
* ``vault``: SecretVault, what the gateway uses: seal_new, reveal (cached), masked, rotate_kek;
* ``fields``: which provider settings fields are secret (typed pydantic.SecretStr);
* ``errors``: SecretError, whose messages never hold a secret.
"""
