"""The case registry's matcher (issue 16): its cost, and how often it marks ordinary mail.

Run: .venv/bin/python bench/bench_cases.py [--people N] [--details N] [--messages N]

1. Speed. A registry of 100,000 generated people (families of a case: children, parents,
   sometimes a grandparent, with dates of birth) and 10,000 confidential details (addresses,
   schools, GP practices, placements) is hashed and indexed (`CaseIndex.build`). About 1 MB of
   realistic case mail (notes about named children and their parents, dates, addresses, some
   of them in the registry) is classified by `classify_message` with no registry and with the
   registry, as plain-text messages of 8 KB and as one message of 1 MB; the best time per MB of
   each (of --repeat runs) and their ratio is printed, and the time of `CaseIndex.match` alone.
   Then memory: classification's traced peak for the 1 MB message with the registry, as
   typed and as Outlook writes it (a typographic apostrophe and dash, an accented name).
2. False positives. At least 5,000 ordinary office messages that are not about any case
   (rotas, meetings, training, IT, leave, thanks: common first names, places, dates and
   weekdays, the kind of relationship talk office mail has) are generated and classified
   against a registry of 10,000 generated people drawn from the same name lists. A message is
   wrongly marked when the registry recognises anything in it (a `case-person` or
   `confidential-detail` reason); the count, the rate and the signals are printed. A second
   corpus signs each message with the sender's full name (first name and surname from the same
   lists), which is also the display name of its From (the matcher does not take the sender's
   own name for a recorded person's); a third signs it so but sends it with no display name,
   which shows how often a colleague's full name is also a recorded person's.

Names follow a Zipf-like frequency (the most common names are much more common), as real names
do; the lists are of common names in England and Wales. Everything is seeded: the figures
repeat.
"""

from __future__ import annotations

import argparse
import random
import secrets
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies.cases import (
    CaseIndex,
    CasePerson,
    ConfidentialDetail,
    DetailKind,
    PersonRole,
    RecordKey,
    ShieldedCase,
)
from policies.content import classify_message
from policies.content_rules import ContentRules
from policies.normalise import fold
from tests.fixtures_content import default_rules

GIRLS = """Olivia Amelia Isla Ava Mia Ivy Lily Isabella Rosie Sophia Grace Willow Freya Florence
Emily Ella Poppy Evie Elsie Charlotte Evelyn Sienna Daisy Ellie Sofia Matilda Phoebe Harper
Luna Alice Sophie Millie Ruby Esme Maya Emilia Eva Hallie Jessica Chloe Ayla Layla Lucy Lottie
Aria Zara Holly Erin Imogen Violet Mila Thea Arabella Bonnie Maisie Hannah Molly Amber Georgia
Scarlett Emma Lola Heidi Harriet Penelope Eliza Orla Iris Sarah Laura Rebecca Katie Amy Jade
Gemma Natalie Rachel Emma Claire Nicola Kelly Lisa Michelle Joanne Karen Helen Julie Donna
Jennifer Louise Stacey Danielle Hayley Samantha Kirsty Leanne Tracey Dawn Angela Susan Linda
Margaret Patricia Janet Carol Elaine Christine Jacqueline Wendy Deborah Alison Jane""".split()
BOYS = """Muhammad Noah Oliver George Leo Arthur Oscar Theodore Freddie Theo Harry Finley Archie
Henry Jack Alfie Charlie Thomas Jacob Lucas Teddy Isaac Tommy Reggie Jude William Arlo Rory
Louie Albert Ronnie Roman Hugo Elijah Max Joshua Ezra Edward Joseph Jaxon Toby Mason Ethan
Sonny Jesse Reuben Ralph Hunter Harrison Samuel Benjamin Daniel James David John Michael Paul
Mark Andrew Richard Christopher Matthew Steven Robert Peter Stephen Anthony Jason Darren Craig
Lee Wayne Gary Simon Neil Ian Kevin Stuart Carl Dean Scott Ryan Adam Liam Luke Nathan Jamie
Ben Sam Callum Connor Kyle Aaron Alan Brian Keith Colin Graham Trevor Barry Martin Philip
Kenneth Terry""".split()
SURNAMES = """Smith Jones Williams Taylor Davies Brown Evans Wilson Thomas Johnson Roberts
Robinson Thompson Wright Walker White Edwards Hughes Green Hall Lewis Harris Clarke Patel
Jackson Wood Turner Martin Cooper Hill Ward Morris Moore Clark Lee King Baker Harrison Morgan
Allen James Scott Phillips Watson Davis Parker Price Bennett Young Griffiths Mitchell Kelly
Cook Carter Richardson Bailey Collins Bell Shaw Murphy Miller Cox Richards Khan Marshall
Anderson Simpson Ellis Adams Singh Begum Wilkinson Foster Chapman Powell Webb Rogers Gray
Mason Ali Hunt Hussain Campbell Matthews Owen Palmer Holmes Mills Barnes Knight Lloyd Butler
Russell Barker Fisher Stevens Jenkins Murray Dixon Harvey Graham Pearson Ahmed Fletcher
Walsh Kaur Gibson Howard Andrews Stewart Elliott Reynolds Saunders Payne Fox Ford Pearce Day
Brooks West Lawrence Cole Atkinson Bradley Spencer Gill Dawson Ball Burton O'Brien Watts Rose
Booth Perry Ryan Grant Wells Armstrong Francis Rees Hayes Hart Hudson Newman Barnett Webster
Hunter Gregory Carr Lowe Page Marsh Riley Dunn Woods Parsons Berry Stone Reid Holland Hawkins
Harding Porter Robertson Newton Oliver Reed Kennedy Williamson Bird Gardner Shah Dean Lane
Cooke Bates Henderson Parry Burgess Bishop Walton Burns Nicholson Shepherd Ross Cross Long
Freeman Warren Nicholls Hamilton Byrne Sutton McDonald Yates Hodgson Robson Curtis Hopkins
O'Connor Harper Coleman Watkins Moss McCarthy Chambers O'Neill Griffin Sharp Hardy Wheeler
Potter Osborne Johnston Gordon Doyle Wallace George Jordan Hutchinson Rowe Burke May Pritchard
Gilbert Willis Higgins Read Miles Stevenson Stephenson Hammond Arnold Buckley Walters Hewitt
Barber Nelson Slater Austin Sullivan Whitehead Mann Frost Lambert Stephens Blake Akhtar Lynch
Goodwin Barton Woodward Thomson Cunningham Quinn Barnett Baxter Bibi Clayton Nash Greenwood
Jennings Holt Kemp Poole Gallagher Bond Stokes Tucker Davidson Fowler Heath Norman Middleton
Lawson Banks French Stanley Jarvis Gibbs Ferguson Hayward Carroll Douglas Dickinson Todd
Barlow Peters Lucas Knowles Hartley Miah Simmons Morton Alexander Field Morrison Norris
Townsend Preston Hancock Thornton Baldwin Burrows Briggs Storey Pugh Fuller Howe""".split()
TOWNS = """Leeds Bradford Sheffield Manchester Salford Stockport Bolton Wigan Oldham Rochdale
Liverpool Birkenhead Preston Blackpool Blackburn Burnley Lancaster Carlisle Newcastle
Gateshead Sunderland Durham Middlesbrough Darlington York Hull Doncaster Rotherham Barnsley
Wakefield Huddersfield Halifax Harrogate Nottingham Derby Leicester Coventry Birmingham
Wolverhampton Walsall Dudley Stoke Stafford Telford Shrewsbury Worcester Hereford Gloucester
Bristol Bath Swindon Oxford Reading Slough Luton Bedford Cambridge Norwich Ipswich Colchester
Chelmsford Southend Brighton Crawley Guildford Portsmouth Southampton Bournemouth Exeter
Plymouth Truro Taunton Canterbury Maidstone Dover Milton Keynes Northampton Peterborough
Lincoln Grimsby Scunthorpe Chester Crewe Warrington Croydon Bromley Enfield Ealing Hackney
Lambeth Lewisham Southwark Camden Islington Harrow Barnet Hounslow Kingston""".split()
STREETS = """Acacia Albert Alexandra Alma Beech Birch Bridge Cedar Chapel Church Clarence
Cromwell Devonshire Elm Fairfield Grange Grove Hawthorn Highfield Hillside Holly Kings
Lansdowne Laurel Lime Manor Maple Market Meadow Mill Nelson Oak Orchard Park Queens Railway
Richmond Rose Sandringham Spring Station Stanley Sycamore Victoria Warwick Westfield Willow
Windsor York Wellington Ash Poplar Chestnut Beaconsfield Marlborough Ashfield""".split()
STREET_KINDS = "Road Street Avenue Lane Close Drive Way Crescent Gardens Terrace Place".split()
SCHOOL_NAMES = """St Mary's, St John's, St Joseph's, Holy Trinity, Oakwood, Meadowbank,
Brookfield, Riverside, Hillcrest, Greenfield, Westfield, Parkside, Valley, Christ Church,
All Saints, St Peter's, Fairfield, Highfield, Moorside, Ashgrove""".replace("\n", " ").split(", ")
TEAMS = ["finance", "payroll", "IT", "facilities", "HR", "business services", "learning",
         "communications", "the digital team", "the estates team"]
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday".split()


def zipf_choice(rng: random.Random, items: Sequence[str], s: float = 1.0) -> str:
    """One of the items, the k-th about 1/k^s as likely as the first (names are like that)."""
    weights = _weights(len(items), s)
    return rng.choices(items, cum_weights=weights)[0]


_WEIGHT_CACHE: dict[tuple[int, float], list[float]] = {}


def _weights(n: int, s: float) -> list[float]:
    key = (n, s)
    if key not in _WEIGHT_CACHE:
        total, cumulative = 0.0, []
        for k in range(1, n + 1):
            total += 1 / k ** s
            cumulative.append(total)
        _WEIGHT_CACHE[key] = cumulative
    return _WEIGHT_CACHE[key]


# Syllables for the long tail of rarer names: in England and Wales the 400 commonest surnames
# are about a third of people, and the 120 commonest first names of each sex most of them.
_HEADS = """Ash Brad Bram Carl Chad Craw Dal Dray Elm Fair Farn Fel Gil Gold Hal Haw Hey Kel
Ken Kil Lang Lin Mar Mel Mor Nor Oak Pen Pid Rad Rams Red Rid Sal Shel Stan Sum Thorn Wal Wes
Whit Wil Win Wood Yar""".split()
_TAILS = """by croft dale den don field ford gate ham hurst ley ling low more nell ridge shaw
stead ton well wick worth wood well cott""".split()
_GIVEN_HEADS = "Ka Ry Za Lu Mi Ar Jo El Ta Ny Sa Ro Da Ke Le Ma Ca Na Te Re".split()
_GIVEN_TAILS = "ia lan ra den lie vin ya ron la mir ko sha rin lo ric".split()


def first_name(rng: random.Random) -> str:
    if rng.random() < 0.15:
        return rng.choice(_GIVEN_HEADS) + rng.choice(_GIVEN_TAILS)
    return zipf_choice(rng, GIRLS if rng.random() < 0.5 else BOYS, 0.5)


def common_first_name(rng: random.Random) -> str:
    """The first names office mail uses: the common ones only."""
    return zipf_choice(rng, GIRLS if rng.random() < 0.5 else BOYS, 0.5)


def surname(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return rng.choice(_HEADS) + rng.choice(_TAILS)
    return zipf_choice(rng, SURNAMES, 0.6)


def postcode(rng: random.Random) -> str:
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    area = rng.choice(["LS", "BD", "M", "S", "L", "B", "NE", "SE", "N", "CV", "NG", "BS", "E"])
    return (f"{area}{rng.randint(1, 29)} {rng.randint(1, 9)}"
            f"{rng.choice(letters)}{rng.choice(letters)}")


def address(rng: random.Random) -> str:
    return (f"{rng.randint(1, 240)} {rng.choice(STREETS)} {rng.choice(STREET_KINDS)}, "
            f"{rng.choice(TOWNS)} {postcode(rng)}")


def detail_text(rng: random.Random, kind: DetailKind) -> str:
    if kind is DetailKind.ADDRESS:
        return address(rng)
    if kind is DetailKind.SCHOOL:
        return f"{rng.choice(SCHOOL_NAMES)} Primary School, {rng.choice(TOWNS)}"
    if kind is DetailKind.NURSERY:
        return (f"{rng.choice(SCHOOL_NAMES)} Nursery, {rng.choice(STREETS)} "
                f"{rng.choice(STREET_KINDS)}")
    if kind is DetailKind.GP:
        practice = rng.choice(["Medical Practice", "Surgery", "Health Centre"])
        return f"{rng.choice(STREETS)} {practice}, {rng.choice(TOWNS)}"
    return address(rng)


def day_between(rng: random.Random, first: date, last: date) -> date:
    return first + timedelta(days=rng.randint(0, (last - first).days))


class Family:
    """One generated case: its number, people (name, role, date of birth) and details."""

    def __init__(self, number: str, people: list[tuple[str, PersonRole, date]],
                 details: list[tuple[DetailKind, str]]) -> None:
        self.number = number
        self.people = people
        self.details = details


def families(rng: random.Random, people: int, details: int) -> list[Family]:
    """Cases until `people` people are recorded; `details` details spread over them."""
    out: list[Family] = []
    count = 0
    while count < people:
        number = f"ZC{rng.randint(10, 26)}C{len(out):05d}"
        family_name = surname(rng)
        members: list[tuple[str, PersonRole, date]] = []
        for _ in range(rng.choice([1, 1, 2, 2, 3])):
            members.append((f"{first_name(rng)} {family_name}", PersonRole.CHILD,
                            day_between(rng, date(2008, 1, 1), date(2025, 12, 31))))
        mother_surname = surname(rng) if rng.random() < 0.4 else family_name
        members.append((f"{zipf_choice(rng, GIRLS, 0.5)} {mother_surname}",
                        PersonRole.PARTY, day_between(rng, date(1970, 1, 1), date(2002, 12, 31))))
        members.append((f"{zipf_choice(rng, BOYS, 0.5)} {family_name}", PersonRole.PARTY,
                        day_between(rng, date(1965, 1, 1), date(2002, 12, 31))))
        if rng.random() < 0.2:
            members.append((f"{first_name(rng)} {surname(rng)}", PersonRole.OTHER,
                            day_between(rng, date(1945, 1, 1), date(1975, 12, 31))))
        members = members[:people - count]
        count += len(members)
        out.append(Family(number, members, []))
    kinds = list(DetailKind)
    for i in range(details):
        family = out[i * len(out) // max(details, 1)]
        kind = rng.choices(kinds, weights=[6, 2, 1, 1, 1, 1])[0]
        family.details.append((kind, detail_text(rng, kind)))
    return out


def build_index(key: RecordKey, cases: list[Family], shield_every: int = 50) -> CaseIndex:
    people = [CasePerson(f.number, f"P{i}-{j}", role, key.name(name), key.date_of_birth(dob),
                         "".join(w[0] for w in name.split()))
              for i, f in enumerate(cases) for j, (name, role, dob) in enumerate(f.people)]
    details = [ConfidentialDetail(f.number, f"D{i}-{j}", kind, key.detail(text),
                                  ("solicitor@lawfirm.example",))
               for i, f in enumerate(cases) for j, (kind, text) in enumerate(f.details)]
    shields = [ShieldedCase(f.number, ("fca@cafcass.gov.uk",)) for f in cases[::shield_every]]
    return CaseIndex.build(key, people, details, shields)


# --- text -----------------------------------------------------------------------------------

def case_note(rng: random.Random, family: Family) -> str:
    """A paragraph of case mail about one family: names, relations, a date, maybe an address."""
    child, _, dob = next(p for p in family.people if p[1] is PersonRole.CHILD)
    parent = family.people[-1][0]
    first = child.split()[0]
    when = day_between(rng, date(2025, 1, 1), date(2026, 12, 31)).strftime("%d %B %Y")
    lines = [
        f"I spoke with {first}'s mum on {rng.choice(WEEKDAYS)} about contact arrangements.",
        f"{parent} did not attend the contact session at the family centre on {when}.",
        f"{child} (DOB {dob:%d/%m/%Y}) told me she enjoys school and sees her father "
        "every other weekend.",
        f"The next hearing is listed at {rng.choice(TOWNS)} Family Court on {when}.",
        f"Please call me back to discuss the section 7 report for {first} before Friday.",
    ]
    if family.details and rng.random() < 0.3:
        lines.append(f"She is now living at {family.details[0][1]}.")
    rng.shuffle(lines)
    return " ".join(lines)


def realistic_text(rng: random.Random, family: Family, size: int) -> str:
    """Case mail about one family, `size` characters of it: notes about the family (names,
    relations, dates, sometimes its address) between paragraphs of ordinary office prose."""
    parts: list[str] = []
    total = 0
    while total < size:
        paragraph = case_note(rng, family) if rng.random() < 0.5 \
            else office_message(rng, signed=False)[1]
        parts.append(paragraph)
        total += len(paragraph) + 2
    return "\n\n".join(parts)[:size]


def office_message(rng: random.Random, signed: bool) -> tuple[str, str, str]:
    """(subject, body, sender's display name) of an ordinary office message: no case in it.
    Signed, it ends with the sender's full name, which is also the From's display name."""
    a, b, c = common_first_name(rng), common_first_name(rng), common_first_name(rng)
    town, other_town = rng.choice(TOWNS), rng.choice(TOWNS)
    day = rng.choice(WEEKDAYS)
    when = day_between(rng, date(2024, 1, 1), date(2026, 12, 31))
    date_text = rng.choice([when.strftime("%d/%m/%Y"), when.strftime("%d %B %Y"),
                            when.strftime("%-d %b"), when.isoformat()])
    team = rng.choice(TEAMS)
    subjects = [f"Team meeting {day}", f"Rota for w/c {date_text}", "Training dates",
                f"Leave request {date_text}", f"{town} office move", "IT update", "Thanks",
                f"Re: {team} query", f"Lunch on {day}?", "Fire drill", "Expenses"]
    sentences = [
        f"Hi {a},", f"Morning {a} and {b},", f"Dear {a},",
        f"Thanks {b} for sorting the room in {town} on {day}.",
        f"Can we move the team meeting to {date_text} at 10am?",
        f"{b} and {c} will cover the duty desk while I'm on leave from {date_text}.",
        f"The {town} office will be closed on {date_text} for the fire alarm test.",
        f"{a} from {team} says the expenses deadline is {date_text}.",
        f"I'm driving over from {other_town} so might be a few minutes late.",
        f"{c}'s leaving do is at the Crown in {town} on {day} after work, all welcome.",
        f"Please book onto the safeguarding refresher training with {b} by {date_text}.",
        f"Laptops need to be brought to {team} in {town} for the update before {day}.",
        f"{a} has kindly offered to organise the {town} team lunch on {date_text}.",
        f"Could you send me the minutes from {day}'s meeting with {b} and {c}?",
        f"My mum is visiting on {day} so I'll be working from {other_town}.",
        f"{b}'s daughter is starting school so she'll be in late on {day}.",
        f"{a}'s dad is poorly so she's on carer's leave until {date_text}.",
        f"The new starter, {c}, joins the {town} team on {date_text}.",
        f"{b} is the fire warden for the second floor in {town}.",
        f"Parking at {town} is suspended on {day} ({date_text}) for resurfacing.",
        f"Happy birthday {c}! Cake in the kitchen at 3.",
        f"The printer on floor 2 in {town} is out of toner again, {team} know.",
    ]
    body = [sentences[rng.randint(0, 2)]]
    body += rng.sample(sentences[3:], rng.randint(2, 5))
    body.append(rng.choice([f"Thanks, {b}", f"Cheers\n{b}", f"Best wishes,\n{b}",
                            f"Regards\n{b}\n{team.capitalize()}", f"{b}"]))
    name = ""
    if signed:
        name = f"{b} {surname(rng)}"
        body.append(f"{name}\n{team.capitalize()} | Cafcass")
    return rng.choice(subjects), "\n\n".join(body), name


def plain_message(subject: str, body: str, sender_name: str = "") -> bytes:
    msg = EmailMessage()
    msg["From"] = f"{sender_name} <jo.bloggs@cafcass.gov.uk>" if sender_name \
        else "jo.bloggs@cafcass.gov.uk"
    msg["To"] = "team@cafcass.gov.uk"
    msg["Subject"] = subject
    msg.set_content(body)
    return msg.as_bytes(policy=SMTP)


# --- measuring --------------------------------------------------------------------------------

def best_seconds(run: Callable[[], object], repeat: int) -> float:
    """The fastest of `repeat` runs: the machine is shared, and the others only add noise."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def speed(args: argparse.Namespace) -> None:
    rng = random.Random(16)
    key = RecordKey(secrets.token_bytes(32))
    start = time.perf_counter()
    cases = families(rng, args.people, args.details)
    generated = time.perf_counter() - start
    start = time.perf_counter()
    index = build_index(key, cases)
    built = time.perf_counter() - start
    print(f"registry: {len(index.people):,} people, {len(index.details):,} confidential details, "
          f"{len(cases):,} cases; generated in {generated:.1f} s, hashed and indexed in "
          f"{built:.1f} s")
    rules = default_rules()
    small = [plain_message("Case note", realistic_text(rng, rng.choice(cases), 8192))
             for _ in range(128)]
    text = realistic_text(rng, rng.choice(cases), 1 << 20)
    large = plain_message("Case notes", text)
    megabytes = len(text.encode()) / (1 << 20)
    for label, messages in (("8 KB messages", small), ("one 1 MB message", [large])):
        empty = best_seconds(lambda m=messages: [classify_message(r, rules, time.monotonic)
                                                   for r in m], args.repeat)
        key.token.cache_clear()  # type: ignore[attr-defined]
        cold = best_seconds(lambda m=messages: [classify_message(r, rules, time.monotonic,
                                                                   index) for r in m], 1)
        warm = best_seconds(lambda m=messages: [classify_message(r, rules, time.monotonic,
                                                                   index) for r in m], args.repeat)
        print(f"classify {label}: no registry {empty / megabytes * 1000:.0f} ms/MB; "
              f"with the registry {warm / megabytes * 1000:.0f} ms/MB "
              f"(first run, token hashes not yet remembered: {cold / megabytes * 1000:.0f} "
              f"ms/MB); ratio {warm / empty:.2f}")
    folded = fold(text)
    alone = best_seconds(lambda: index.match([folded], dob_cues=rules.date_of_birth_regex),
                           args.repeat)
    found = index.match([folded], dob_cues=rules.date_of_birth_regex)
    print(f"CaseIndex.match alone: {alone / megabytes * 1000:.0f} ms/MB "
          f"({len(found.people):,} people and {len(found.details):,} details recognised)")
    for label, body in (("as typed", text), ("as Outlook writes it (’ – and an accent)",
                                             as_outlook_writes(text))):
        raw = plain_message("Case notes", body)
        print(f"memory, one {len(raw) / 2**20:.1f} MiB message {label}: classification's traced "
              f"peak beside the message {classification_peak(raw, rules, index):.2f}x")


def as_outlook_writes(text: str) -> str:
    """The text with a typographic apostrophe, a dash and an accented name, as Outlook types."""
    return (text.replace("'", "\u2019").replace(", ", " \u2013 ", 3000)
            .replace(" and ", " and Zo\u00eb ", 2000))


def classification_peak(raw: bytes, rules: ContentRules, index: CaseIndex) -> float:
    """`classify_message`'s traced peak beyond what was in use before it, as a multiple of the
    message (after one untraced run: token hashes remembered, as in service)."""
    classify_message(raw, rules, time.monotonic, index)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        classify_message(raw, rules, time.monotonic, index)
        return (tracemalloc.get_traced_memory()[1] - start) / len(raw)
    finally:
        tracemalloc.stop()


def false_positives(args: argparse.Namespace) -> None:
    rng = random.Random(17)
    key = RecordKey(secrets.token_bytes(32))
    cases = families(rng, 10_000, 1_000)
    index = build_index(key, cases)
    rules = default_rules()
    print(f"false positives: registry of {len(index.people):,} people, "
          f"{len(index.details):,} details, {len(cases):,} cases")
    corpora = (("first names only", False, True),
               ("signed with the sender's full name, also the From display name", True, True),
               ("signed with the sender's full name, From without a display name", True, False))
    for label, signed, display in corpora:
        messages = [office_message(rng, signed) for _ in range(args.messages)]
        marked = 0
        signals: Counter[str] = Counter()
        for subject, body, name in messages:
            raw = plain_message(subject, body, name if display else "")
            facts = classify_message(raw, rules, time.monotonic, index)
            if facts.case_people or facts.confidential or facts.possible_cases:
                marked += 1
                signals.update({p.signal.value for p in facts.case_people})
                signals.update({f"detail:{d.kind.value}" for d in facts.confidential})
                signals.update({"possible-case"} if facts.possible_cases else set())
        print(f"  {len(messages):,} office messages ({label}): {marked} wrongly marked "
              f"protected by the registry = {100 * marked / len(messages):.2f}%"
              + (f"; signals {dict(signals)}" if signals else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--details", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    speed(args)
    false_positives(args)


if __name__ == "__main__":
    main()
