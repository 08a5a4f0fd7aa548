"""Rate limits, the usage ledger, metrics, traces and the access log: what each request costs and did."""
