CREATE SCHEMA IF NOT EXISTS "webhook_gateway";
--> statement-breakpoint
CREATE TABLE "webhook_gateway"."api_clients" (
	"id" text PRIMARY KEY NOT NULL,
	"secret_hash" text NOT NULL,
	"name" text NOT NULL,
	"email" text NOT NULL,
	"permissions" text[] NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"revoked_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "webhook_gateway"."oauth_tokens" (
	"token_hash" text PRIMARY KEY NOT NULL,
	"kind" text NOT NULL,
	"client_id" text NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"revoked_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "webhook_gateway"."webhook_urls" (
	"url" text PRIMARY KEY NOT NULL,
	"webhook_id" text NOT NULL,
	"position" integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE "webhook_gateway"."webhooks" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"description" text DEFAULT '' NOT NULL,
	"call_throttling" integer NOT NULL,
	"enabled" boolean DEFAULT true NOT NULL,
	"default_payload_includes_secret" boolean DEFAULT false NOT NULL,
	"secret" text NOT NULL,
	"previous_secret" text,
	"previous_secret_expires_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"created_by" text NOT NULL,
	"modified_at" timestamp with time zone DEFAULT now() NOT NULL,
	"modified_by" text NOT NULL,
	CONSTRAINT "webhooks_name_unique" UNIQUE("name")
);
--> statement-breakpoint
ALTER TABLE "webhook_gateway"."oauth_tokens" ADD CONSTRAINT "oauth_tokens_client_id_api_clients_id_fk" FOREIGN KEY ("client_id") REFERENCES "webhook_gateway"."api_clients"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "webhook_gateway"."webhook_urls" ADD CONSTRAINT "webhook_urls_webhook_id_webhooks_id_fk" FOREIGN KEY ("webhook_id") REFERENCES "webhook_gateway"."webhooks"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "oauth_tokens_client_idx" ON "webhook_gateway"."oauth_tokens" USING btree ("client_id");--> statement-breakpoint
CREATE INDEX "oauth_tokens_expires_idx" ON "webhook_gateway"."oauth_tokens" USING btree ("expires_at");--> statement-breakpoint
CREATE INDEX "webhook_urls_webhook_idx" ON "webhook_gateway"."webhook_urls" USING btree ("webhook_id","position");