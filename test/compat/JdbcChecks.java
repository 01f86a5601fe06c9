// pgJDBC compatibility checks with the driver's DEFAULT settings: run against one target (COMPAT_* environment), print one JSON line per check.
// Compiled and run by test/compat/pgjdbc.test.ts with Debian's JDK and /usr/share/java/postgresql.jar, once directly
// against Postgres and once through pgwarden; every check's assertions are the same for both.
import java.math.BigDecimal;
import java.io.StringReader;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.sql.*;
import java.time.LocalDate;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.*;
import java.util.concurrent.*;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.PGResultSetMetaData;
import org.postgresql.PGStatement;
import org.postgresql.copy.CopyManager;
import org.postgresql.util.PGInterval;

public class JdbcChecks {
  interface Check { void run() throws Exception; }

  static final Map<String, Check> CHECKS = new LinkedHashMap<>();
  static final String URL = "jdbc:postgresql://" + env("COMPAT_HOST") + ":" + env("COMPAT_PORT") + "/" + env("COMPAT_DATABASE");
  static final String S = env("COMPAT_SCHEMA");

  static String env(String k) {
    String v = System.getenv(k);
    if (v == null) throw new IllegalStateException("missing " + k);
    return v;
  }

  /** Only user and password: every other property is the driver's default (prepareThreshold 5, sslmode prefer, ...). */
  static Connection connect() throws SQLException {
    Properties p = new Properties();
    p.setProperty("user", env("COMPAT_USER"));
    p.setProperty("password", env("COMPAT_PASSWORD"));
    return DriverManager.getConnection(URL, p);
  }

  /** A superuser session, always direct, holding kv 'k100' locked so an UPDATE of it waits without using CPU. */
  static Connection lockKv() throws SQLException {
    Connection c = DriverManager.getConnection(env("COMPAT_SUPER_JDBC_URL"), env("COMPAT_SUPER_USER"), env("COMPAT_SUPER_PASSWORD"));
    c.setAutoCommit(false);
    try (Statement st = c.createStatement()) {
      st.executeQuery("SELECT * FROM " + S + ".kv WHERE k = 'k100' FOR UPDATE").close();
    }
    return c;
  }

  static void waitForLockWaiter() throws Exception {
    try (Connection w = DriverManager.getConnection(env("COMPAT_SUPER_JDBC_URL"), env("COMPAT_SUPER_USER"), env("COMPAT_SUPER_PASSWORD"));
         PreparedStatement ps = w.prepareStatement("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE ?")) {
      ps.setString(1, "%" + S + ".kv%");
      long deadline = System.currentTimeMillis() + 5000;
      while (System.currentTimeMillis() < deadline) {
        try (ResultSet rs = ps.executeQuery()) {
          rs.next();
          if (rs.getInt(1) > 0) return;
        }
        Thread.sleep(20);
      }
    }
    throw new AssertionError("the blocked statement never reached the server");
  }

  static final String BLOCKED = "UPDATE " + S + ".kv SET v = v WHERE k = 'k100'";

  static void eq(Object got, Object want) {
    if (!Objects.equals(got, want)) throw new AssertionError("expected " + want + ", got " + got);
  }

  static String sqlState(Check c) throws Exception {
    try {
      c.run();
    } catch (SQLException e) {
      return e.getSQLState();
    }
    throw new AssertionError("expected an SQLException, got success");
  }

  static Object one(Connection c, String sql) throws SQLException {
    try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
      if (!rs.next()) throw new AssertionError("no row from " + sql);
      return rs.getObject(1);
    }
  }

  static void check(String name, Check c) { CHECKS.put(name, c); }

  static {
    check("connect", () -> {
      try (Connection c = connect()) {
        if (!c.isValid(5)) throw new AssertionError("connection not valid");
        eq(one(c, "SELECT current_database()"), "app");
      }
    });

    check("database metadata: product and driver", () -> {
      try (Connection c = connect()) {
        DatabaseMetaData md = c.getMetaData();
        eq(md.getDatabaseProductName(), "PostgreSQL");
        if (md.getDatabaseMajorVersion() < 15) throw new AssertionError("major " + md.getDatabaseMajorVersion());
        eq(md.getURL(), URL);
      }
    });

    check("application name (setClientInfo)", () -> {
      try (Connection c = connect()) {
        c.setClientInfo("ApplicationName", "compat-jdbc");
        String app = (String) one(c, "SHOW application_name");
        if (!app.endsWith("compat-jdbc")) throw new AssertionError("application_name " + app);
      }
    });

    check("scalar types", () -> {
      try (Connection c = connect();
           PreparedStatement ps = c.prepareStatement("SELECT ?::int, ?::int8, ?::numeric, ?::bool, ?::text, ?::float8, ?::uuid, ?::int")) {
        UUID u = UUID.fromString("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        ps.setInt(1, Integer.MAX_VALUE);
        ps.setLong(2, Long.MAX_VALUE);
        ps.setBigDecimal(3, new BigDecimal("12345678901234567890.123456789"));
        ps.setBoolean(4, true);
        ps.setString(5, "naïve café 日本語 😀 'q'");
        ps.setDouble(6, 1.5e-7);
        ps.setObject(7, u);
        ps.setNull(8, Types.INTEGER);
        try (ResultSet rs = ps.executeQuery()) {
          rs.next();
          eq(rs.getInt(1), Integer.MAX_VALUE);
          eq(rs.getLong(2), Long.MAX_VALUE);
          eq(rs.getBigDecimal(3), new BigDecimal("12345678901234567890.123456789"));
          eq(rs.getBoolean(4), true);
          eq(rs.getString(5), "naïve café 日本語 😀 'q'");
          eq(rs.getDouble(6), 1.5e-7);
          eq(rs.getObject(7), u);
          eq(rs.getObject(8), null);
          eq(rs.wasNull(), true);
        }
      }
    });

    check("bytea and intervals", () -> {
      try (Connection c = connect(); PreparedStatement ps = c.prepareStatement("SELECT ?::bytea, '1 day 02:03:04.5'::interval")) {
        byte[] b = new byte[2048];
        new Random(7).nextBytes(b);
        ps.setBytes(1, b);
        try (ResultSet rs = ps.executeQuery()) {
          rs.next();
          eq(Arrays.equals(rs.getBytes(1), b), true);
          eq(rs.getObject(2), new PGInterval(0, 0, 1, 2, 3, 4.5));
        }
      }
    });

    check("timestamps with time zones", () -> {
      try (Connection c = connect();
           PreparedStatement ps = c.prepareStatement("SELECT ?::timestamptz, ?::date, ?::timestamptz::text")) {
        try (Statement st = c.createStatement()) { st.execute("SET TimeZone = 'Asia/Kolkata'"); }
        OffsetDateTime when = OffsetDateTime.of(2024, 3, 10, 6, 59, 59, 123_000_000, ZoneOffset.UTC);
        ps.setObject(1, when);
        ps.setObject(2, LocalDate.of(2024, 2, 29));
        ps.setObject(3, when);
        try (ResultSet rs = ps.executeQuery()) {
          rs.next();
          eq(rs.getObject(1, OffsetDateTime.class).toInstant(), when.toInstant());
          eq(rs.getObject(2, LocalDate.class), LocalDate.of(2024, 2, 29));
          eq(rs.getString(3), "2024-03-10 12:29:59.123+05:30");
          eq(rs.getTimestamp(1).toInstant(), when.toInstant());
        }
      }
    });

    check("arrays", () -> {
      try (Connection c = connect(); PreparedStatement ps = c.prepareStatement("SELECT ?::text[], ?::int[], ARRAY[[1,2],[3,4]]")) {
        ps.setArray(1, c.createArrayOf("text", new String[] {"a", "b,c", "d\"e", null, ""}));
        ps.setArray(2, c.createArrayOf("int4", new Integer[] {1, null, 3}));
        try (ResultSet rs = ps.executeQuery()) {
          rs.next();
          eq(Arrays.asList((Object[]) rs.getArray(1).getArray()), Arrays.asList("a", "b,c", "d\"e", null, ""));
          eq(Arrays.asList((Object[]) rs.getArray(2).getArray()), Arrays.asList(1, null, 3));
          eq(Arrays.deepToString((Object[]) rs.getArray(3).getArray()), "[[1, 2], [3, 4]]");
        }
      }
    });

    check("server-side prepare after prepareThreshold", () -> {
      try (Connection c = connect(); PreparedStatement ps = c.prepareStatement("SELECT v FROM " + S + ".kv WHERE k = ?")) {
        for (int i = 1; i <= 10; i++) {
          ps.setString(1, "k" + i);
          try (ResultSet rs = ps.executeQuery()) {
            rs.next();
            eq(rs.getString(1), "v" + i);
          }
        }
        eq(ps.unwrap(PGStatement.class).isUseServerPrepare(), true);
      }
    });

    check("batch inserts", () -> {
      try (Connection c = connect(); PreparedStatement ps = c.prepareStatement("INSERT INTO " + S + ".items (name, qty, price) VALUES (?, ?, ?)")) {
        for (int i = 0; i < 500; i++) {
          ps.setString(1, "item " + i);
          ps.setInt(2, i);
          ps.setBigDecimal(3, new BigDecimal(i).movePointLeft(2));
          ps.addBatch();
        }
        int[] counts = ps.executeBatch();
        eq(counts.length, 500);
        eq(Arrays.stream(counts).sum(), 500);
        eq(one(c, "SELECT sum(qty)::int FROM " + S + ".items"), 124750);
      }
    });

    check("batch with a failing row", () -> {
      try (Connection c = connect(); PreparedStatement ps = c.prepareStatement("INSERT INTO " + S + ".kv VALUES (?, ?)")) {
        c.setAutoCommit(false);
        for (String k : new String[] {"b1", "b2", "k1", "b3"}) {
          ps.setString(1, k);
          ps.setString(2, "batch");
          ps.addBatch();
        }
        try {
          ps.executeBatch();
          throw new AssertionError("no BatchUpdateException");
        } catch (BatchUpdateException e) {
          eq(e.getSQLState(), "23505");
          eq(e.getNextException() == null ? null : e.getNextException().getSQLState(), "23505");
        }
        c.rollback();
        eq(one(c, "SELECT count(*)::int FROM " + S + ".kv WHERE k LIKE 'b%'"), 0);
      }
    });

    check("read-only connection and isolation level", () -> {
      try (Connection c = connect()) {
        c.setAutoCommit(false);
        c.setReadOnly(true);
        c.setTransactionIsolation(Connection.TRANSACTION_SERIALIZABLE);
        eq(one(c, "SHOW transaction_isolation"), "serializable");
        try (Statement st = c.createStatement()) {
          eq(sqlState(() -> st.executeUpdate("INSERT INTO " + S + ".wide VALUES (-1, 'no')")), "25006");
        }
        c.rollback();
        eq(c.isReadOnly(), true);
      }
    });

    check("getGeneratedKeys", () -> {
      try (Connection c = connect();
           PreparedStatement ps = c.prepareStatement("INSERT INTO " + S + ".items (name) VALUES (?)", Statement.RETURN_GENERATED_KEYS)) {
        ps.setString(1, "generated");
        eq(ps.executeUpdate(), 1);
        try (ResultSet keys = ps.getGeneratedKeys()) {
          if (!keys.next()) throw new AssertionError("no generated key");
          int id = keys.getInt("id");
          eq(one(c, "SELECT name FROM " + S + ".items WHERE id = " + id), "generated");
        }
      }
    });

    check("DatabaseMetaData.getTables", () -> {
      try (Connection c = connect(); ResultSet rs = c.getMetaData().getTables(null, S, "%", new String[] {"TABLE"})) {
        List<String> names = new ArrayList<>();
        while (rs.next()) names.add(rs.getString("TABLE_NAME"));
        eq(names, Arrays.asList("copy_t", "items", "kv", "wide"));
      }
    });

    check("DatabaseMetaData.getColumns", () -> {
      try (Connection c = connect(); ResultSet rs = c.getMetaData().getColumns(null, S, "items", "%")) {
        List<String> cols = new ArrayList<>();
        while (rs.next()) cols.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME") + ":" + rs.getString("IS_NULLABLE"));
        eq(cols, Arrays.asList("id:serial:NO", "name:text:NO", "qty:int4:YES", "price:numeric:YES", "tags:_text:YES", "meta:jsonb:YES", "at:timestamptz:YES"));
      }
    });

    check("DatabaseMetaData.getPrimaryKeys and getIndexInfo", () -> {
      try (Connection c = connect()) {
        try (ResultSet rs = c.getMetaData().getPrimaryKeys(null, S, "items")) {
          rs.next();
          eq(rs.getString("COLUMN_NAME") + "/" + rs.getString("PK_NAME"), "id/items_pkey");
          eq(rs.next(), false);
        }
        try (ResultSet rs = c.getMetaData().getIndexInfo(null, S, "kv", true, false)) {
          rs.next();
          eq(rs.getString("INDEX_NAME"), "kv_pkey");
        }
      }
    });

    check("ResultSetMetaData", () -> {
      try (Connection c = connect(); Statement st = c.createStatement();
           ResultSet rs = st.executeQuery("SELECT id, name, price FROM " + S + ".items LIMIT 1")) {
        ResultSetMetaData md = rs.getMetaData();
        eq(md.getColumnCount(), 3);
        eq(md.getColumnName(2), "name");
        eq(md.getColumnType(3), Types.NUMERIC);
        eq(md.getPrecision(3), 12);
        eq(md.getScale(3), 2);
        // These two make the driver read pg_attribute / pg_class for the result's source columns.
        eq(md.isNullable(2), ResultSetMetaData.columnNoNulls);
        eq(md.isAutoIncrement(1), true);
        eq(md.unwrap(PGResultSetMetaData.class).getBaseSchemaName(1), S);
        eq(md.unwrap(PGResultSetMetaData.class).getBaseTableName(2), "items");
      }
    });

    check("transactions: commit and rollback", () -> {
      try (Connection c = connect()) {
        c.setAutoCommit(false);
        try (Statement st = c.createStatement()) {
          st.executeUpdate("INSERT INTO " + S + ".wide VALUES (1, 'committed')");
          c.commit();
          st.executeUpdate("INSERT INTO " + S + ".wide VALUES (2, 'rolled back')");
          c.rollback();
        }
        eq(one(c, "SELECT string_agg(id::text, ',') FROM " + S + ".wide WHERE id IN (1, 2)"), "1");
        c.commit();
      }
    });

    check("savepoints and an error inside a transaction", () -> {
      try (Connection c = connect(); Statement st = c.createStatement()) {
        c.setAutoCommit(false);
        st.executeUpdate("INSERT INTO " + S + ".wide VALUES (10, 'kept')");
        Savepoint sp = c.setSavepoint("sp1");
        eq(sqlState(() -> st.executeQuery("SELECT 1 / 0")), "22012");
        eq(sqlState(() -> st.executeQuery("SELECT 1")), "25P02");
        c.rollback(sp);
        st.executeUpdate("INSERT INTO " + S + ".wide VALUES (11, 'after savepoint')");
        c.releaseSavepoint(c.setSavepoint());
        c.commit();
        eq(one(c, "SELECT string_agg(id::text, ',' ORDER BY id) FROM " + S + ".wide WHERE id >= 10 AND id < 20"), "10,11");
      }
    });

    check("SQLState of constraint violations", () -> {
      try (Connection c = connect(); Statement st = c.createStatement()) {
        eq(sqlState(() -> st.executeUpdate("INSERT INTO " + S + ".kv VALUES ('k1', 'dup')")), "23505");
        eq(sqlState(() -> st.executeUpdate("INSERT INTO " + S + ".items (name) VALUES (NULL)")), "23502");
      }
    });

    check("SQLState 42601 for a syntax error", () -> {
      try (Connection c = connect(); Statement st = c.createStatement()) {
        eq(sqlState(() -> st.executeQuery("SELECT 1 FROM WHERE")), "42601");
      }
    });

    check("SQLState 42P01 for an unknown table", () -> {
      try (Connection c = connect(); Statement st = c.createStatement()) {
        eq(sqlState(() -> st.executeQuery("SELECT * FROM " + S + ".no_such_table")), "42P01");
      }
    });

    check("setFetchSize cursor (portal with row limit)", () -> {
      try (Connection c = connect()) {
        c.setAutoCommit(false);
        try (PreparedStatement ps = c.prepareStatement("SELECT k FROM " + S + ".kv ORDER BY k")) {
          ps.setFetchSize(7);
          int n = 0;
          try (ResultSet rs = ps.executeQuery()) {
            while (rs.next()) n++;
          }
          eq(n, 100);
        }
        c.commit();
      }
    });

    check("several statements in one execute", () -> {
      try (Connection c = connect(); Statement st = c.createStatement()) {
        eq(st.execute("SELECT 1; SELECT 'two'"), true);
        try (ResultSet rs = st.getResultSet()) { rs.next(); eq(rs.getInt(1), 1); }
        eq(st.getMoreResults(), true);
        try (ResultSet rs = st.getResultSet()) { rs.next(); eq(rs.getString(1), "two"); }
      }
    });

    check("CallableStatement", () -> {
      try (Connection c = connect()) {
        try (CallableStatement cs = c.prepareCall("{? = call " + S + ".add_one(?)}")) {
          cs.registerOutParameter(1, Types.INTEGER);
          cs.setInt(2, 41);
          cs.execute();
          eq(cs.getInt(1), 42);
        }
        try (CallableStatement cs = c.prepareCall("{call " + S + ".add_out(?, ?, ?)}")) {
          cs.setInt(1, 1);
          cs.registerOutParameter(2, Types.INTEGER);
          cs.registerOutParameter(3, Types.VARCHAR);
          cs.execute();
          eq(cs.getInt(2) + "/" + cs.getString(3), "2/x1");
        }
      }
    });

    check("large strings (1 MiB)", () -> {
      try (Connection c = connect(); PreparedStatement ps = c.prepareStatement("SELECT length(?), md5(?)")) {
        String big = "é".repeat(512 * 1024);
        ps.setString(1, big);
        ps.setString(2, big);
        byte[] d = MessageDigest.getInstance("MD5").digest(big.getBytes(StandardCharsets.UTF_8));
        StringBuilder hex = new StringBuilder();
        for (byte x : d) hex.append(String.format("%02x", x));
        try (ResultSet rs = ps.executeQuery()) {
          rs.next();
          eq(rs.getInt(1), big.length());
          eq(rs.getString(2), hex.toString());
        }
      }
    });

    check("10,000 parameters in one statement", () -> {
      int rows = 5000;
      StringBuilder sql = new StringBuilder("INSERT INTO " + S + ".wide (id, body) VALUES ");
      for (int i = 0; i < rows; i++) sql.append(i == 0 ? "" : ", ").append("(?, ?)");
      try (Connection c = connect(); PreparedStatement ps = c.prepareStatement(sql.toString())) {
        for (int i = 0; i < rows; i++) {
          ps.setInt(2 * i + 1, 1000 + i);
          ps.setString(2 * i + 2, "row " + i);
        }
        eq(ps.executeUpdate(), rows);
      }
    });

    check("CopyManager copyIn and copyOut", () -> {
      try (Connection c = connect()) {
        CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
        StringBuilder in = new StringBuilder();
        for (int i = 0; i < 1000; i++) in.append(i).append("\tline ").append(i).append(" ü\n");
        eq(cm.copyIn("COPY " + S + ".copy_t (id, t) FROM STDIN", new StringReader(in.toString())), 1000L);
        StringWriter out = new StringWriter();
        eq(cm.copyOut("COPY (SELECT id, t FROM " + S + ".copy_t WHERE id < 3 ORDER BY id) TO STDOUT", out), 3L);
        eq(out.toString(), "0\tline 0 ü\n1\tline 1 ü\n2\tline 2 ü\n");
      }
    });

    check("setQueryTimeout cancels a waiting statement", () -> {
      try (Connection c = connect(); Connection lock = lockKv(); Statement st = c.createStatement()) {
        st.setQueryTimeout(1);
        eq(sqlState(() -> st.executeUpdate(BLOCKED)), "57014");
        lock.rollback();
        eq(one(c, "SELECT 3"), 3);
      }
    });

    check("Statement.cancel from another thread", () -> {
      ExecutorService ex = Executors.newSingleThreadExecutor();
      try (Connection c = connect(); Connection lock = lockKv(); Statement st = c.createStatement()) {
        Future<?> f = ex.submit(() -> {
          waitForLockWaiter();
          st.cancel();
          return null;
        });
        eq(sqlState(() -> st.executeUpdate(BLOCKED)), "57014");
        f.get(10, TimeUnit.SECONDS);
        lock.rollback();
      } finally {
        ex.shutdownNow();
      }
    });

    check("LISTEN / NOTIFY", () -> {
      try (Connection c = connect(); Statement st = c.createStatement()) {
        st.execute("LISTEN compat_jdbc");
        st.execute("NOTIFY compat_jdbc, 'payload'");
        PGNotification[] ns = c.unwrap(PGConnection.class).getNotifications(2000);
        if (ns == null || ns.length != 1) throw new AssertionError("notifications " + Arrays.toString(ns));
        eq(ns[0].getName() + "/" + ns[0].getParameter(), "compat_jdbc/payload");
        eq(ns[0].getPID(), c.unwrap(PGConnection.class).getBackendPID());
      }
    });

    check("backend pid", () -> {
      try (Connection c = connect()) {
        eq(c.unwrap(PGConnection.class).getBackendPID(), one(c, "SELECT pg_backend_pid()"));
      }
    });

    check("DDL in a writable schema", () -> {
      String exists = "SELECT count(*)::int FROM pg_catalog.pg_class r JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace "
          + "WHERE n.nspname = '" + S + "' AND r.relname = 'made'";
      try (Connection c = connect(); Statement st = c.createStatement()) {
        st.execute("CREATE TABLE " + S + ".made (id int PRIMARY KEY, v text)");
        st.execute("CREATE INDEX made_v ON " + S + ".made (v)");
        st.execute("ALTER TABLE " + S + ".made ADD COLUMN w int");
        st.execute("COMMENT ON TABLE " + S + ".made IS 'made by the compat suite'");
        eq(one(c, exists), 1);
        st.execute("DROP TABLE " + S + ".made");
        eq(one(c, exists), 0);
      }
    });

    check("ANALYZE, VACUUM and LOCK", () -> {
      try (Connection c = connect(); Statement st = c.createStatement()) {
        st.execute("ANALYZE " + S + ".items");
        st.execute("VACUUM " + S + ".kv");
        c.setAutoCommit(false);
        st.execute("LOCK TABLE " + S + ".items IN SHARE ROW EXCLUSIVE MODE");
        c.commit();
      }
    });

    check("temporary table", () -> {
      try (Connection c = connect(); Statement st = c.createStatement()) {
        st.execute("CREATE TEMP TABLE scratch (id int)");
        st.executeUpdate("INSERT INTO scratch SELECT generate_series(1, 3)");
        eq(one(c, "SELECT count(*)::int FROM scratch"), 3);
      }
    });
  }

  static String json(String s) {
    StringBuilder b = new StringBuilder("\"");
    for (char ch : s.toCharArray()) {
      if (ch == '"' || ch == '\\') b.append('\\').append(ch);
      else if (ch < 0x20) b.append(String.format("\\u%04x", (int) ch));
      else b.append(ch);
    }
    return b.append('"').toString();
  }

  public static void main(String[] args) {
    for (Map.Entry<String, Check> e : CHECKS.entrySet()) {
      String out;
      try {
        e.getValue().run();
        out = "{\"name\":" + json(e.getKey()) + ",\"ok\":true}";
      } catch (Throwable t) { // every failure is reported by name, the run goes on
        String state = t instanceof SQLException ? " " + ((SQLException) t).getSQLState() : "";
        String msg = t.getClass().getSimpleName() + state + ": " + t.getMessage();
        out = "{\"name\":" + json(e.getKey()) + ",\"ok\":false,\"error\":" + json(msg.length() > 500 ? msg.substring(0, 500) : msg) + "}";
      }
      System.out.println(out);
      System.out.flush();
    }
  }
}
