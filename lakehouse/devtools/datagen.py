"""Deterministic synthetic staffing CSV: Midwest manufacturing, warehouse and trades workers.

Same ``rows`` and ``seed`` always give a byte-identical file (``random.Random(seed)`` only; every
table is an ordered tuple). A few dirty cells exercise schema inference: ``N/A`` in
``hourly_rate``/``years_experience`` at fixed rows after row 1000, and ~0.5% empty cells.
"""

from __future__ import annotations

import random
from bisect import bisect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

COLUMNS: list[str] = [
    "worker_id", "name", "role", "city", "state", "zip", "phone", "email", "skills",
    "certifications", "years_experience", "hourly_rate", "reliability", "available", "shift",
    "languages", "last_active", "resume_text",
]  # fmt: skip

NA_RATE_ROWS = frozenset({1500, 250_000, 480_000})
NA_YEARS_ROWS = frozenset({4321, 360_000})
CHUNK_ROWS = 20_000


@dataclass(frozen=True)
class RoleSpec:
    title: str
    weight: float  # relative share of rows
    rate: tuple[float, float]  # entry-level and senior hourly rate, USD
    skills: tuple[str, ...]
    certs: tuple[str, ...]
    duties: tuple[str, ...]  # resume phrases: "duties have included A, B, and C."
    settings: tuple[str, ...]  # "N years of experience in <setting>"


def _spec(title: str, weight: float, rate: tuple[float, float], *parts: str) -> RoleSpec:
    sk, ce, du, se = (tuple(p.split("; ")) for p in parts)
    return RoleSpec(title, weight, rate, sk, ce, du, se)


_PLANT = "manufacturing plants; production facilities; industrial plants"
_WH = "distribution centers; warehouses; third-party logistics facilities; fulfillment centers"
_TRADE = "commercial construction; residential service work; industrial maintenance"
_OFFICE = "office environments; customer contact centers; corporate offices"
_SPECS = (
    _spec("Warehouse Associate", 10, (15.5, 21), "order picking; RF scanner; pallet jack; cycle counting; packing and labeling; WMS data entry; pallet building; shrink wrapping; case picking", "OSHA-10; Pallet Jack Certification; Forklift", "picking orders to hit 150 lines per hour; staging outbound freight by route; labeling cartons and pallets; replenishing pick faces; keeping aisles clean and clear", _WH),  # noqa: E501
    _spec("Order Picker", 4, (15.5, 21), "order picking; voice picking; RF scanner; pick-to-light; electric pallet jack; cherry picker; batch picking", "OSHA-10; Forklift; Order Picker Certification", "pulling orders with voice picking headsets; batch picking e-commerce orders; verifying SKUs with an RF scanner; restocking pick locations", _WH),  # noqa: E501
    _spec("Material Handler", 9, (16, 22), "pallet jack; sit-down forklift; kanban replenishment; line feeding; RF scanner; material staging; hazmat labeling", "OSHA-10; Forklift; Hazmat Awareness", "feeding raw material to production lines; moving WIP between work centers; kanban replenishment; staging finished goods for shipping", _PLANT),  # noqa: E501
    _spec("Forklift Operator", 9, (17, 24), "sit-down forklift; stand-up forklift; reach truck; pallet jack; RF scanner; OSHA forklift certification; trailer loading; order picker; clamp truck", "Forklift; OSHA-10; Reach Truck Certification; Pallet Jack Certification", "loading and unloading trailers; putting away pallets to high racking with a reach truck; performing daily forklift safety inspections; moving finished goods to staging lanes", _WH),  # noqa: E501
    _spec("Production Worker", 10, (15, 20.5), "line work; visual inspection; GMP; 5S; machine tending; packaging; basic hand tools; meeting production quotas", "OSHA-10; GMP Training; Forklift", "running high-speed packaging lines; inspecting parts for defects; clearing jams on conveyors; keeping the work cell to 5S standards; hitting hourly production targets", _PLANT),  # noqa: E501
    _spec("Assembler", 8, (15.5, 22), "mechanical assembly; electrical assembly; torque tools; blueprint reading; soldering; wire harness assembly; pneumatic tools; work instructions", "OSHA-10; IPC-A-610; IPC/WHMA-A-620", "assembling components from work instructions; routing and tying wire harnesses; torquing fasteners to spec; inspecting subassemblies before final pack", _PLANT),  # noqa: E501
    _spec("Machine Operator", 8, (16, 23), "machine setup; injection molding; press brake; punch press; SPC charting; lockout/tagout; calipers; changeovers", "OSHA-10; Lockout/Tagout; Forklift", "setting up and running injection molding presses; performing quick changeovers; recording SPC measurements; adjusting machines to hold tolerances", _PLANT),  # noqa: E501
    _spec("Packer", 6, (15, 19), "case packing; palletizing; labeling; visual inspection; shrink wrapping; scale operation; carton erecting", "OSHA-10; GMP Training", "packing finished product into cases; building and wrapping pallets; checking labels and lot codes; weighing boxes for shipment", _PLANT),  # noqa: E501
    _spec("CNC Operator", 5, (18, 30), "G-code; first article inspection; Mastercam; calipers and micrometers; Fanuc controls; Haas controls; CNC lathe; CNC mill; GD&T; tool offsets", "OSHA-10; NIMS Machining Level I; Lockout/Tagout", "setting tool offsets on Haas and Fanuc controls; running first article inspection; editing G-code programs at the machine; measuring parts with calipers and micrometers", _PLANT),  # noqa: E501
    _spec("Welder", 5, (19, 32), "MIG welding; TIG welding; stick welding; flux-core welding; blueprint reading; plasma cutting; weld symbols; fitting", "AWS D1.1; OSHA-10; AWS Certified Welder; Forklift", "MIG welding structural steel to AWS D1.1; fitting and tacking assemblies from prints; plasma cutting plate; grinding and finishing welds", _PLANT),  # noqa: E501
    _spec("Quality Technician", 4, (19, 30), "first article inspection; CMM programming; SPC; GD&T; calipers and micrometers; ISO 9001; root cause analysis; PPAP", "Six Sigma Yellow Belt; Six Sigma Green Belt; ASQ CQT; ISO 9001 Internal Auditor", "running CMM inspections; writing nonconformance reports; leading root cause analysis with 8D; auditing the line against ISO 9001 procedures", _PLANT),  # noqa: E501
    _spec("Maintenance Technician", 4, (24, 38), "PLC troubleshooting; hydraulics; pneumatics; preventive maintenance; motor controls; welding; conveyor repair; lockout/tagout; CMMS", "OSHA-30; NFPA 70E; Lockout/Tagout; Forklift; Aerial Lift", "troubleshooting PLC faults on packaging lines; rebuilding hydraulic cylinders; completing preventive maintenance work orders in CMMS; repairing conveyors and gearboxes", _PLANT),  # noqa: E501
    _spec("Shipping and Receiving Clerk", 4, (16, 22), "bills of lading; SAP; WMS; freight scheduling; RF scanner; cycle counting; carrier coordination; forklift", "OSHA-10; Forklift; Hazmat Awareness", "checking inbound freight against packing lists; printing bills of lading; scheduling LTL pickups; keying receipts into SAP", _WH),  # noqa: E501
    _spec("Inventory Clerk", 3, (16, 21), "cycle counting; inventory reconciliation; SAP; Excel; RF scanner; bin location audits; WMS", "OSHA-10; Forklift", "running daily cycle counts; reconciling variances in SAP; auditing bin locations; reporting shrink and damages", _WH),  # noqa: E501
    _spec("Truck Driver (CDL-A)", 4, (24, 36), "Class A CDL; DOT regulations; ELD logs; pre-trip inspection; dry van; flatbed; reefer; backing and docking", "CDL-A; Hazmat Endorsement; Tanker Endorsement; TWIC Card", "running regional routes across the Midwest; completing DOT pre-trip inspections; keeping ELD logs compliant; delivering to distribution centers on schedule", "regional trucking; over-the-road freight; local delivery"),  # noqa: E501
    _spec("Electrician", 3, (26, 44), "industrial wiring; conduit bending; PLC troubleshooting; NEC code; motor controls; 480V three-phase; VFD installation; lockout/tagout; blueprint reading", "OSHA-10; OSHA-30; Journeyman Electrician License; NFPA 70E; Aerial Lift", "pulling wire through EMT and rigid conduit; terminating 480V three-phase feeders; troubleshooting motor starters and VFDs; installing circuits to NEC code; bending conduit with hand and hydraulic benders", _TRADE),  # noqa: E501
    _spec("HVAC Technician", 2, (24, 40), "EPA 608; refrigeration; rooftop units; boilers; ductwork; brazing; thermostat controls; heat pumps", "EPA 608 Universal; OSHA-10; NATE Certification", "servicing rooftop units; charging refrigerant systems; brazing copper line sets; diagnosing furnace and boiler faults", _TRADE),  # noqa: E501
    _spec("Plumber", 2, (25, 42), "pipe threading; PEX and copper; soldering; drain cleaning; water heater installation; backflow testing; blueprint reading", "Journeyman Plumber License; OSHA-10; Backflow Prevention Certification", "roughing in supply and drain lines; sweating copper fittings; installing water heaters; clearing drain lines with augers", _TRADE),  # noqa: E501
    _spec("Carpenter", 2, (22, 38), "framing; finish carpentry; concrete forms; blueprint reading; power tools; drywall; cabinet installation; layout", "OSHA-10; OSHA-30; NCCER Core; Aerial Lift", "framing walls and roofs; setting concrete forms; hanging doors and trim; reading blueprints for layout", _TRADE),  # noqa: E501
    _spec("Customer Service Representative", 1.2, (15, 20), "call handling; CRM software; order entry; complaint resolution; typing 50 WPM", "Customer Service Certification", "answering inbound calls; entering orders in the CRM; resolving billing questions", _OFFICE),  # noqa: E501
    _spec("Administrative Assistant", 1.0, (16, 22), "Microsoft Office; scheduling; data entry; filing; phone etiquette; QuickBooks", "Microsoft Office Specialist", "managing calendars; preparing reports in Excel; processing invoices in QuickBooks", _OFFICE),  # noqa: E501
    _spec("Security Officer", 0.8, (16, 21), "access control; patrol; incident reports; CCTV monitoring; de-escalation", "PERC Card; First Aid/CPR", "patrolling plant grounds; monitoring CCTV; writing incident reports", "plant security; distribution center security"),  # noqa: E501
)  # fmt: skip
ROLES: dict[str, RoleSpec] = {s.title: s for s in _SPECS}

# "City ST area-code zip-prefix weight"; the last 6 (TX, CA, GA) are the non-Midwest tail
_CITY_TEXT = """
Chicago IL 312 606 12|Peoria IL 309 616 2|Rockford IL 815 611 2|Joliet IL 815 604 2
Springfield IL 217 627 1.5|Aurora IL 630 605 1.5|Elgin IL 847 601 1|Decatur IL 217 625 1
Champaign IL 217 618 1|Indianapolis IN 317 462 6|Fort Wayne IN 260 468 2.5|Gary IN 219 464 1.5
Evansville IN 812 477 1.5|South Bend IN 574 466 1.5|Lafayette IN 765 479 1|Muncie IN 765 473 1
St. Louis MO 314 631 6|Kansas City MO 816 641 4|Springfield MO 417 658 1.5|Columbia MO 573 652 1
Joplin MO 417 648 0.8|Milwaukee WI 414 532 5|Madison WI 608 537 2|Green Bay WI 920 543 1.5
Kenosha WI 262 531 1|Racine WI 262 534 1|Appleton WI 920 549 1|Eau Claire WI 715 547 0.8
Columbus OH 614 432 4|Cleveland OH 216 441 4|Toledo OH 419 436 2|Cincinnati OH 513 452 3
Dayton OH 937 454 2|Akron OH 330 443 1.5|Youngstown OH 330 445 1|Detroit MI 313 482 5
Grand Rapids MI 616 495 3|Lansing MI 517 489 1.5|Flint MI 810 485 1.5|Kalamazoo MI 269 490 1
Saginaw MI 989 486 1|Warren MI 586 480 1|Des Moines IA 515 503 1.5|Cedar Rapids IA 319 524 1
Davenport IA 563 528 1|Minneapolis MN 612 554 2|St. Paul MN 651 551 1|Rochester MN 507 559 0.5
Louisville KY 502 402 2|Lexington KY 859 405 0.8|Bowling Green KY 270 421 0.5
Houston TX 713 770 0.8|Dallas TX 214 752 0.6|Los Angeles CA 213 900 0.5|Fresno CA 559 937 0.3
Atlanta GA 404 303 0.5|Savannah GA 912 314 0.2"""
_CITIES: tuple[tuple[str, str, str, str, float], ...] = tuple(
    (" ".join(words), st, area, zip3, float(w))
    for item in _CITY_TEXT.strip().replace("\n", "|").split("|")
    for *words, st, area, zip3, w in [item.split(" ")]
)
MIDWEST = ("IL", "IN", "MO", "WI", "OH", "MI", "IA", "MN", "KY")

_FIRST = (
    "James Michael Robert John David William Richard Joseph Thomas Christopher Daniel Matthew "
    "Anthony Mark Steven Kevin Brian Jason Tyler Brandon Justin Marcus Andre DeShawn Terrell "
    "Luis Jose Carlos Juan Miguel Alejandro Jesus Tomasz Piotr Krzysztof Minh Pao Ahmed "
    "Omar Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy "
    "Ashley Amanda Stephanie Melissa Nicole Tiffany Keisha Latoya Maria Guadalupe Rosa Ana "
    "Veronica Agnieszka Katarzyna Mai Fatima Emily Megan Rachel Heather Brittany Crystal"
).split()
_LAST = (
    "Smith Johnson Williams Brown Jones Miller Davis Wilson Anderson Taylor Thomas Moore Jackson "
    "Martin Lee Thompson White Harris Clark Lewis Robinson Walker Young Allen King Wright Scott "
    "Hill Green Adams Baker Nelson Carter Mitchell Garcia Martinez Rodriguez Hernandez Lopez "
    "Gonzalez Perez Sanchez Ramirez Torres Flores Rivera Kowalski Nowak Wisniewski Lewandowski "
    "Schmidt Schneider Mueller Weber Becker Hoffmann Olson Larson Johansson Peterson Hansen "
    "Nguyen Tran Vang Xiong Khan Ali O'Brien O'Connor Murphy Sullivan Kelly McCarthy Washington "
    "Jefferson Brooks Coleman Jenkins Bell Hughes Price Sanders Foster Bryant Russell Griffin"
).split()
_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "aol.com", "icloud.com")
_LANGS = (
    ("English", 80.5), ("English, Spanish", 14.0), ("Spanish", 2.0), ("English, Polish", 1.5),
    ("English, Arabic", 0.6), ("English, Vietnamese", 0.5), ("English, Hmong", 0.4),
)  # fmt: skip
_SHIFTS = (("day", 55.0), ("night", 25.0), ("swing", 20.0))
_EMPLOYERS = (
    "an automotive parts supplier", "a food and beverage plant", "a third-party logistics "
    "warehouse", "a steel fabrication shop", "a plastics injection molding plant", "a regional "
    "distribution center", "an agricultural equipment manufacturer", "a corrugated packaging "
    "plant", "a commercial contractor", "a paper mill", "a gray iron foundry", "an appliance "
    "factory", "a tier-one auto supplier", "a cabinet manufacturer", "a retail DC",
)  # fmt: skip
_TERMS = ("full-time", "temp-to-hire", "long-term contract", "direct hire", "seasonal", "temp")
_WINS = (
    "helped cut unplanned downtime by {p}% over one year",
    "was promoted to lead within {m} months",
    "trained {n} new hires on safe work practices",
    "kept a {q}% accuracy rate on audited work",
    "worked {m} months without a single safety incident",
    "covered extra shifts during peak season without missing a day",
)
_TRAITS = (
    'Was named "Employee of the Month" twice for attendance and hustle.',
    "Supervisors describe a dependable worker who shows up early, stays late, and asks questions.",
    "Works well on a team, trains new hires, and communicates clearly with leads and supervisors.",
    "Takes pride in a steady pace, close attention to detail, and leaving the area cleaner.",
    "Comfortable with mandatory overtime, weekend work, and changing priorities on short notice.",
    "Follows lockout/tagout and PPE rules every time and speaks up about unsafe conditions.",
)
_DATES = tuple(
    f"{y}-{m:02d}-{d:02d}"
    for y in (2023, 2024, 2025)
    for m in range(1, 13)
    for d in range(1, (31 if m in (1, 3, 5, 7, 8, 10, 12) else 30 if m != 2 else 28) + 1)
    if (y, m) <= (2025, 9)
)


class _Weighted:
    """O(log n) weighted pick with exact, order-preserving cumulative weights."""

    def __init__(self, items: Sequence[str], weights: Sequence[float]) -> None:
        self.items, self.cum = tuple(items), tuple(accumulate(weights))
        self.total = self.cum[-1]

    def pick(self, u: float) -> str:
        return self.items[bisect(self.cum, u * self.total)]


def _and_list(xs: Sequence[str]) -> str:
    if len(xs) <= 2:
        return " and ".join(xs)
    return f"{', '.join(xs[:-1])}, and {xs[-1]}"


def iter_rows(rows: int, seed: int = 42) -> Iterator[list[str]]:
    """Yield ``rows`` records of raw field values (strings, unquoted), in COLUMNS order."""
    rng = random.Random(seed)
    r, sample = rng.random, rng.sample
    roles = _Weighted(list(ROLES), [s.weight for s in _SPECS])
    city_idx = _Weighted([str(i) for i in range(len(_CITIES))], [c[4] for c in _CITIES])
    langs = _Weighted([x for x, _ in _LANGS], [w for _, w in _LANGS])
    shifts = _Weighted([x for x, _ in _SHIFTS], [w for _, w in _SHIFTS])
    emails = [
        (f.lower(), "".join(ch for ch in s.lower() if ch.isalnum())) for f in _FIRST for s in _LAST
    ]
    nf, nl, nd, ndates = len(_FIRST), len(_LAST), len(_DOMAINS), len(_DATES)
    by_state: dict[str, list[str]] = {}
    for c in _CITIES:
        by_state.setdefault(c[1], []).append(c[0])
    for wid in range(1, rows + 1):
        role = roles.pick(r())
        spec = ROLES[role]
        city, state, area, zip3, _ = _CITIES[int(city_idx.pick(r()))]
        fi, li = int(r() * nf), int(r() * nl)
        first, last = _FIRST[fi], _LAST[li]
        ef, el = emails[fi * nl + li]
        u = r()
        email = f"{ef}.{el}{wid}" if u < 0.5 else f"{ef[0]}{el}{wid % 997}"
        years = min(int(r() * r() * 36), 35)
        lo, hi = spec.rate
        rate = lo + (hi - lo) * (0.6 * years / 35 + 0.4 * r())
        rel = 1.0 - 0.45 * r() ** 2.5
        shift = shifts.pick(r())
        skills = sample(spec.skills, 3 + int(r() * min(4, len(spec.skills) - 2)))
        certs = sample(spec.certs, 1 + int(r() * min(3, len(spec.certs))))
        setting = spec.settings[int(r() * len(spec.settings))]
        term = _TERMS[int(r() * len(_TERMS))]
        sents = [
            f"{role} with {years} years of experience in {setting} around {city}, {state}, "
            f"looking for {term} work."
        ]
        for k in sample(range(6), min(5, 1 + int(r() * 5.5))):
            if k == 0:
                sents.append(f"Hands-on skills include {_and_list(sample(spec.skills, 4))}.")
            elif k == 1:
                duties = sample(spec.duties, min(4, len(spec.duties)))
                sents.append(f"Duties have included {_and_list(duties)}.")
            elif k == 2:
                sents.append(
                    f"Current certifications include {_and_list(certs)}, with a clean safety "
                    "record and no recordable injuries."
                )
            elif k == 3:
                sents.append(_TRAITS[int(r() * len(_TRAITS))])
            elif k == 4:
                win = _WINS[int(r() * len(_WINS))].format(
                    p=5 + int(r() * 25), m=6 + int(r() * 30), n=2 + int(r() * 15),
                    q=int(95 + r() * 5),
                )  # fmt: skip
                emp = _EMPLOYERS[int(r() * len(_EMPLOYERS))]
                near = by_state[state]
                prev = near[int(r() * len(near))]
                sents.append(f"Previously worked at {emp} in {prev}, {state}, and {win}.")
            else:
                sents.append(
                    f"Available for {shift} shift, can lift 50 lbs, and has reliable "
                    f"transportation to sites within {10 + int(r() * 40)} miles of {city}."
                )
        u = r()  # dirty cells: ~0.5% empty each, N/A at fixed rows after 1000
        rate_s = "N/A" if wid in NA_RATE_ROWS else "" if u < 0.005 else f"{rate:.2f}"
        yield [
            str(wid), f"{first} {last}", role, city, state, f"{zip3}{int(r() * 100):02d}",
            f"{area}-555-{int(r() * 10000):04d}", f"{email}@{_DOMAINS[int(r() * nd)]}",
            ", ".join(skills), "" if 0.005 <= u < 0.01 else ", ".join(certs),
            "N/A" if wid in NA_YEARS_ROWS else str(years), rate_s, f"{rel:.3f}",
            "true" if r() < 0.62 else "false", shift,
            "" if 0.01 <= u < 0.015 else langs.pick(r()), _DATES[int(r() * ndates)],
            "\n".join(sents),
        ]  # fmt: skip


def _quote(s: str) -> str:
    if "," in s or '"' in s or "\n" in s or "\r" in s:
        return '"' + s.replace('"', '""') + '"'
    return s


def generate(
    path: Path, rows: int, seed: int = 42, *, progress: Callable[[int], None] | None = None
) -> int:
    """Write a deterministic staffing CSV (same rows+seed -> byte-identical file).

    Returns bytes written. ``progress`` gets the number of rows written after each chunk.
    """
    written = 0
    path = Path(path)
    with path.open("wb") as f:
        buf = [",".join(COLUMNS)]
        for i, row in enumerate(iter_rows(rows, seed), 1):
            buf.append(",".join(map(_quote, row)))
            if i % CHUNK_ROWS == 0 or i == rows:
                data = ("\n".join(buf) + "\n").encode("utf-8")
                written += f.write(data)
                buf = []
                if progress is not None:
                    progress(i)
        if buf:  # rows == 0: header only
            written += f.write(("\n".join(buf) + "\n").encode("utf-8"))
    return written


def next_week(src: Path, dst: Path, rows: int) -> dict[str, int]:
    """The next weekly export of ``generate(src, rows)``, for upsert tests and the benchmark:
    2% of the workers changed (half moved city, which an embedded "{role} in {city}" text
    shows; half a new phone, which it does not), 0.5% gone, 1% new (ids above ``rows``), and a
    new column ``badge`` (set on the new and changed rows, empty elsewhere). The choices are
    fixed strides of the worker id, so they never overlap. Returns the counts made."""
    import duckdb  # only the tests and the benchmark need it here

    changed, gone, new = rows // 50, rows // 200, rows // 100
    wid = "CAST(worker_id AS BIGINT)"
    con = duckdb.connect()
    con.execute(f"CREATE TABLE w AS SELECT * FROM read_csv('{src}', all_varchar = true)")
    con.execute("ALTER TABLE w ADD COLUMN badge VARCHAR DEFAULT ''")
    upto = changed * 50
    con.execute(
        f"UPDATE w SET city = city || ' Heights', badge = 'B' || worker_id "
        f"WHERE {wid} % 100 = 7 AND {wid} <= {upto}"
    )
    con.execute(
        f"UPDATE w SET phone = '555-000-' || worker_id, badge = 'P' || worker_id "
        f"WHERE {wid} % 100 = 57 AND {wid} <= {upto}"
    )
    con.execute(
        f"INSERT INTO w SELECT * REPLACE (CAST({wid} + {rows} AS VARCHAR) AS worker_id, "
        f"'N' || worker_id AS badge) FROM w WHERE {wid} <= {new}"
    )
    con.execute(f"DELETE FROM w WHERE {wid} % 200 = 101 AND {wid} <= {gone * 200}")
    con.execute(f"COPY (SELECT * FROM w ORDER BY {wid}) TO '{dst}' (HEADER)")
    con.close()
    return {"text_changed": changed // 2, "changed": changed, "gone": gone, "new": new}
