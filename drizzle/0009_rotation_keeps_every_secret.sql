-- A rotation no longer drops the secret replaced by the rotation before it: replaced secrets are a
-- list, newest first, each signing until its own expiry (and kept after it, to be hidden from
-- read-only profiles). The one previous secret moves over.
ALTER TABLE "webhook_gateway"."webhooks" ADD COLUMN "previous_secrets" jsonb DEFAULT '[]'::jsonb NOT NULL;--> statement-breakpoint
UPDATE "webhook_gateway"."webhooks" SET "previous_secrets" = jsonb_build_array(jsonb_build_object('secret', "previous_secret", 'expiresAt', to_jsonb("previous_secret_expires_at")))
  WHERE "previous_secret" IS NOT NULL AND "previous_secret_expires_at" IS NOT NULL;--> statement-breakpoint
ALTER TABLE "webhook_gateway"."webhooks" DROP COLUMN "previous_secret";--> statement-breakpoint
ALTER TABLE "webhook_gateway"."webhooks" DROP COLUMN "previous_secret_expires_at";
