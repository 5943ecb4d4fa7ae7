-- Messages, Calls and Errors are read from hourly counts kept as messages and attempts are
-- written, no longer counted row by row. The counts start from the last 30 days of rows.
CREATE TABLE "webhook_gateway"."delivery_counts" (
	"webhook_id" text NOT NULL,
	"event_id" text NOT NULL,
	"hour" timestamp with time zone NOT NULL,
	"messages" integer DEFAULT 0 NOT NULL,
	"calls" integer DEFAULT 0 NOT NULL,
	"errors" integer DEFAULT 0 NOT NULL,
	CONSTRAINT "delivery_counts_webhook_id_event_id_hour_pk" PRIMARY KEY("webhook_id","event_id","hour")
);
--> statement-breakpoint
INSERT INTO "webhook_gateway"."delivery_counts" ("webhook_id", "event_id", "hour", "messages", "calls", "errors")
SELECT "webhook_id", "event_id", "hour", sum("messages"), sum("calls"), sum("errors") FROM (
  SELECT "webhook_id", "event_id", date_trunc('hour', "created_at", 'UTC') AS "hour", count(*) AS "messages", 0 AS "calls", 0 AS "errors"
  FROM "webhook_gateway"."messages" WHERE "created_at" >= now() - interval '30 days' GROUP BY 1, 2, 3
  UNION ALL
  SELECT "webhook_id", "event_id", date_trunc('hour', "attempted_at", 'UTC'), 0, count(*), count(*) FILTER (WHERE NOT "succeeded")
  FROM "webhook_gateway"."delivery_attempts" WHERE "attempted_at" >= now() - interval '30 days' GROUP BY 1, 2, 3
) AS "counted" GROUP BY 1, 2, 3;
--> statement-breakpoint
DROP INDEX "webhook_gateway"."messages_event_idx";--> statement-breakpoint
DROP INDEX "webhook_gateway"."delivery_attempts_webhook_idx";--> statement-breakpoint
DROP INDEX "webhook_gateway"."delivery_attempts_event_idx";--> statement-breakpoint
ALTER TABLE "webhook_gateway"."delivery_counts" ADD CONSTRAINT "delivery_counts_webhook_id_webhooks_id_fk" FOREIGN KEY ("webhook_id") REFERENCES "webhook_gateway"."webhooks"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "delivery_counts_event_idx" ON "webhook_gateway"."delivery_counts" USING btree ("event_id","hour");