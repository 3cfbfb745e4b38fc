-- API tokens may expire: a background sweep revokes them when `expires_ms` passes (an audited
-- system action). Alerting policies count consecutive failed deliveries to their webhooks: at
-- the limit, the app disables the policy (an audited system action too).
ALTER TABLE api_tokens ADD COLUMN expires_ms BIGINT;
ALTER TABLE alerting_policies ADD COLUMN failed_deliveries INTEGER NOT NULL DEFAULT 0;
