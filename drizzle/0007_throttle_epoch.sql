-- Bumped when a webhook's CallThrottling changes: its waiting deliveries are booked afresh on a
-- new throttle clock, so that the new limit applies to them at once. While a webhook has
-- deliveries waiting unqueued, its new ones wait behind them (the index tells which).
ALTER TABLE "webhook_gateway"."webhooks" ADD COLUMN "throttle_epoch" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
CREATE INDEX "deliveries_unqueued_webhook_idx" ON "webhook_gateway"."deliveries" USING btree ("webhook_id") WHERE not "webhook_gateway"."deliveries"."queued" and "webhook_gateway"."deliveries"."status" in ('QUEUED', 'SENDING', 'RETRY_SCHEDULED');
