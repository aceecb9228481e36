// The Express guide's login system, as the guide builds it: express-session with connect-redis,
// bcrypt, requireAuth, regenerate at login, "remember me". bench/peers.py runs it beside
// tornado-auth on the same Redis and compares the two dashboards.
//
//   PORT=8001 REDIS_URL=redis://127.0.0.1:6379/0 SESSION_SECRET=... \
//   PEER_EMAIL=bench@example.com PEER_PASSWORD=... node app.js
const express = require("express");
const session = require("express-session");
const RedisStore = require("connect-redis").default;
const { createClient } = require("redis");
const bcrypt = require("bcrypt");

const DAY = 24 * 60 * 60 * 1000;

async function main() {
  const redisClient = createClient({ url: process.env.REDIS_URL });
  redisClient.on("error", (error) => console.error("redis:", error.message));
  await redisClient.connect();

  // One user, hashed at cost 12 as tornado-auth's are (the guide keeps users in a database).
  const users = new Map([
    [process.env.PEER_EMAIL, {
      id: "1", email: process.env.PEER_EMAIL,
      passwordHash: await bcrypt.hash(process.env.PEER_PASSWORD, 12),
    }],
  ]);

  const app = express();
  app.use(express.json());
  app.use(session({
    store: new RedisStore({ client: redisClient }),
    secret: process.env.SESSION_SECRET,
    resave: false,
    saveUninitialized: false,
    cookie: { secure: false, httpOnly: true, maxAge: DAY }, // plain HTTP on loopback
  }));

  function requireAuth(req, res, next) {
    if (!req.session.userId) {
      return res.status(401).json({ error: "Authentication required" });
    }
    next();
  }

  app.post("/api/login", async (req, res, next) => {
    const { email, password, rememberMe } = req.body || {};
    const user = users.get(email);
    if (!user || !(await bcrypt.compare(String(password), user.passwordHash))) {
      return res.status(401).json({ error: "Invalid credentials" });
    }
    req.session.regenerate((error) => {
      if (error) return next(error);
      req.session.userId = user.id;
      req.session.email = user.email;
      req.session.cookie.maxAge = rememberMe ? 30 * DAY : DAY;
      req.session.save((error) => (error ? next(error) : res.json({ message: "Logged in" })));
    });
  });

  app.get("/api/dashboard", requireAuth, (req, res) => {
    res.json({ message: "Welcome to dashboard", userId: req.session.userId, email: req.session.email });
  });

  app.post("/api/logout", (req, res, next) => {
    req.session.destroy((error) => (error ? next(error) : res.json({ message: "Logged out" })));
  });

  app.get("/healthz", (req, res) => res.json({ status: "ok" }));

  const port = Number(process.env.PORT || 8001);
  app.listen(port, "127.0.0.1", () => console.log(`listening on http://127.0.0.1:${port}`));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
