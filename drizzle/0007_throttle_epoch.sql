-- Bumped when a webhook's CallThrottling changes: its waiting deliveries are booked afresh on a
-- new throttle clock, so that the new limit applies to them at once.
ALTER TABLE "webhook_gateway"."webhooks" ADD COLUMN "throttle_epoch" integer DEFAULT 0 NOT NULL;
