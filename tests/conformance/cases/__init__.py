"""One module per provider, each defining `CASE: ProviderCase`; the suite discovers them."""
