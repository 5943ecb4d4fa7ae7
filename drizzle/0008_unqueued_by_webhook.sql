-- The sweep hands unqueued deliveries over webhook by webhook, each webhook's oldest first, so that
-- one webhook's long rebooked backlog does not hold back another's. The index by id alone served
-- the old sweep in global id order and has no other reader.
CREATE INDEX "deliveries_unqueued_by_webhook_idx" ON "webhook_gateway"."deliveries" USING btree ("webhook_id","id") WHERE not "webhook_gateway"."deliveries"."queued" and "webhook_gateway"."deliveries"."status" in ('QUEUED', 'SENDING', 'RETRY_SCHEDULED');--> statement-breakpoint
DROP INDEX "webhook_gateway"."deliveries_unqueued_idx";--> statement-breakpoint
DROP INDEX "webhook_gateway"."deliveries_unqueued_webhook_idx";
