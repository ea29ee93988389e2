import { assert, describe, it } from "@effect/vitest"
import { splitStatements } from "./SqlFileMigrations.ts"

describe("splitStatements", () => {
  it("splits at top-level semicolons and drops comment-only pieces", () => {
    const script = `-- header; not a statement
create table a (id text); /* block; comment */
insert into a values ('x;y'), ('it''s; fine');
create function f() returns int language sql as $body$ select 1; $body$;
select "odd;name" from a
-- trailing comment;
`
    assert.deepStrictEqual(splitStatements(script), [
      "-- header; not a statement\ncreate table a (id text)",
      "/* block; comment */\ninsert into a values ('x;y'), ('it''s; fine')",
      "create function f() returns int language sql as $body$ select 1; $body$",
      "select \"odd;name\" from a\n-- trailing comment;"
    ])
  })

  it("returns nothing for an empty or comment-only script", () => {
    assert.deepStrictEqual(splitStatements(""), [])
    assert.deepStrictEqual(splitStatements("-- nothing here;\n/* nor; here */\n"), [])
  })
})
