// Signs a webhook with the reference Standard Webhooks library (npm
// "standardwebhooks", installed into tests/node_modules by deploy/deps.sh),
// so the integration tests can check that gcrelay accepts what a real
// sender produces.
//
//   node sign_standardwebhooks.js <whsec_secret> <msg_id> <unix_ts> < body
//
// Prints the "v1,<base64>" signature of Webhook(secret).sign(msgId, date,
// body) on stdout.  Exit status 2 on bad usage, 3 when the package is
// missing.
"use strict";

const path = require("path");

let Webhook;
try {
	({ Webhook } = require(
		path.join(__dirname, "..", "node_modules", "standardwebhooks"),
	));
} catch (e) {
	process.stderr.write(
		"standardwebhooks package not found: " + e.message + "\n",
	);
	process.exit(3);
}

const [secret, msgId, ts] = process.argv.slice(2);
if (!secret || !msgId || !/^[0-9]+$/.test(ts || "")) {
	process.stderr.write(
		"usage: sign_standardwebhooks.js SECRET MSG_ID UNIX_TS < BODY\n",
	);
	process.exit(2);
}

const chunks = [];
process.stdin.on("data", (c) => chunks.push(c));
process.stdin.on("end", () => {
	// A Buffer, as a server framework would hand it over; the library
	// signs its UTF-8 text.
	const body = Buffer.concat(chunks);
	const wh = new Webhook(secret);
	const date = new Date(Number(ts) * 1000);
	process.stdout.write(wh.sign(msgId, date, body) + "\n");
});
