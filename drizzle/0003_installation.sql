CREATE TABLE "webhook_gateway"."installation" (
	"singleton" boolean PRIMARY KEY DEFAULT true NOT NULL,
	"id" text NOT NULL
);
--> statement-breakpoint
INSERT INTO "webhook_gateway"."installation" ("singleton", "id") VALUES (true, replace(gen_random_uuid()::text, '-', '')) ON CONFLICT DO NOTHING;
