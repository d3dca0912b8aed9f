"""Many tenants on one platform: cached key checks with prompt revocation, per-tenant limits and quotas, fair
queueing at saturated endpoints, and usage accounting."""
