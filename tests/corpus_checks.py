"""A generated corpus for the agency-check recogniser (issue 13, item 3; DESIGN ruling 13).

Two kinds of message, built from templates with random people, forces, councils, trusts, dates
and case numbers (`corpus(seed)` is deterministic for a seed):

* **ordinary** mail that mentions checks without being a result: check requests and their forms
  (blank result boxes included), chasers and status notes to solicitors and courts, letters to
  parents saying checks will be done, Cafcass safeguarding letters and court analyses that
  summarise results in Cafcass's own words, forwarded acknowledgements and consent requests from
  the police, councils and the NHS, court orders and solicitors' letters forwarded from outside,
  and "check" in other senses (DBS, right to work, welfare checks);
* **results**: PNC prints, police disclosure letters, council checks responses, health visitor
  record extracts and safeguarding-check result forms, as PDF or text attachments, as attached
  messages (message/rfc822), inline Outlook and Gmail forwards and quoted replies from the
  agency's address, and pasted or handed over in the sender's own words.

Each sample says what it is (`positive`) and how it was built (`kind`, `channel`), so the
figures can be broken down. Nothing here is a stand-in for our code: the messages are real
MIME built with the stdlib, the PDFs real PDFs (tests/fixtures_content.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP

from tests.fixtures_content import make_pdf

STAFF = "jo.bloggs@cafcass.gov.uk"
FIRST = ["John", "Sarah", "Mohammed", "Aisha", "David", "Emma", "Liam", "Chloe", "Tomasz",
         "Priya", "Kwame", "Niamh", "Gareth", "Fatima", "Ryan", "Leanne", "Darren", "Olivia"]
LAST = ["Smith", "Jones", "Khan", "Patel", "Williams", "Brown", "O'Neill", "Kowalski",
        "Mensah", "Hughes", "Taylor", "Begum", "Evans", "Walsh", "Okafor", "Davies"]
FORCES = [("Kent Police", "kent.pnn.police.uk"), ("Metropolitan Police Service", "met.police.uk"),
          ("West Yorkshire Police", "westyorkshire.pnn.police.uk"),
          ("Greater Manchester Police", "gmp.police.uk"),
          ("Thames Valley Police", "thamesvalley.police.uk"),
          ("Avon and Somerset Constabulary", "avonandsomerset.pnn.police.uk"),
          ("Durham Constabulary", "durham.pnn.police.uk"), ("Essex Police", "essex.police.uk")]
COUNCILS = [("Leeds City Council", "leeds.gov.uk"), ("London Borough of Camden", "camden.gov.uk"),
            ("Kent County Council", "kent.gov.uk"),
            ("Manchester City Council", "manchester.gov.uk"),
            ("Norfolk County Council", "norfolk.gcsx.gov.uk"),
            ("Bristol City Council", "bristol.gov.uk")]
TRUSTS = [("Leeds Community Healthcare NHS Trust", "nhs.net"),
          ("Kent Community Health NHS Foundation Trust", "kentcht.nhs.uk"),
          ("Manchester University NHS Foundation Trust", "mft.nhs.uk"),
          ("Sirona care & health (0-19 service)", "nhs.net")]
COURTS = [("Family Court at Leeds", "leeds.familycourt@justice.gov.uk"),
          ("Family Court at Manchester", "manchester.familycourt@justice.gov.uk"),
          ("East London Family Court", "eastlondon.fc@justice.gov.uk")]
FIRMS = ["smithlaw.co.uk", "family-law-partners.co.uk", "harrisonsolicitors.com",
         "kellyandco-law.co.uk"]
OFFENCES = ["Assault occasioning actual bodily harm", "Common assault", "Criminal damage",
            "Harassment without violence", "Driving whilst disqualified",
            "Possession of a controlled drug (Class B)", "Breach of a non-molestation order",
            "Theft from a shop", "Battery"]
DISPOSALS = ["Community order 12 months", "Fine £250", "Conditional discharge 12 months",
             "Suspended sentence 16 weeks", "Restraining order 2 years", "Caution"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "September",
          "October", "November"]


@dataclass(frozen=True)
class Sample:
    """One message of the corpus and what it is."""

    kind: str  # which template
    channel: str  # how it was sent: own, pdf, text-attachment, rfc822, outlook, gmail, reply, ...
    positive: bool  # an original agency check result
    raw: bytes
    recipients: tuple[str, ...]


class _Gen:
    """Random slots for the templates."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def pick(self, items: Sequence[str]) -> str:
        return self.r.choice(list(items))

    def person(self) -> str:
        return f"{self.pick(FIRST)} {self.pick(LAST)}"

    def upper_person(self) -> tuple[str, str]:
        return self.pick(LAST).upper(), self.pick(FIRST).upper()

    def date(self) -> str:
        day, month = self.r.randint(1, 28), self.r.randint(1, 12)
        return f"{day:02d}/{month:02d}/{self.r.randint(2015, 2026)}"

    def long_date(self) -> str:
        return f"{self.r.randint(1, 28)} {self.pick(MONTHS)} {self.r.randint(2016, 2026)}"

    def dob(self) -> str:
        day, month = self.r.randint(1, 28), self.r.randint(1, 12)
        return f"{day:02d}/{month:02d}/{self.r.randint(1970, 2000)}"

    def case(self) -> str:
        letters = "ABCDEFGHJKLMNPRSTVWZ"
        return (f"{self.pick(letters)}{self.pick(letters)}{self.r.randint(10, 26)}"
                f"{self.pick('CPZ')}{self.r.randint(0, 99999):05d}")

    def officer(self, domain: str) -> tuple[str, str]:
        first, last = self.pick(FIRST), self.pick(LAST).replace("'", "")
        return f"{first} {last}", f"{first.lower()}.{last.lower()}@{domain}"

    def force(self) -> tuple[str, str]:
        name, domain = self.r.choice(FORCES)
        return name, domain

    def maybe(self, text: str, chance: float = 0.5) -> str:
        return text if self.r.random() < chance else ""

    def lines(self, *items: str) -> str:
        return "\n".join(item for item in items if item is not None)

    def some(self, items: Sequence[str], low: int, high: int) -> list[str]:
        chosen = self.r.sample(list(items), self.r.randint(low, min(high, len(items))))
        return [items_ for items_ in items if items_ in chosen]  # keep their order


# ----------------------------------------------------------------------------------------------
# Ordinary mail that mentions checks
# ----------------------------------------------------------------------------------------------


def _request_to_police(g: _Gen) -> tuple[str, str]:
    case = g.case()
    people = [g.person() for _ in range(g.r.randint(1, 3))]
    rows = "\n".join(f"Name: {p}\nDate of birth: {g.dob()}\nAddress: {g.r.randint(1, 90)} "
                     f"{g.pick(['Mill Lane', 'High Street', 'Park Road', 'Church Close'])}"
                     for p in people)
    subject = g.pick(["Safeguarding check request", f"Police checks - {case}",
                      "Request for PNC checks", f"Cafcass safeguarding checks {case}",
                      "Checks request - WTFH"])
    body = g.lines(
        g.pick(["Dear colleague,", "Hello,", "Good morning,", "Dear Disclosure Unit,"]),
        "",
        g.pick([f"Please could you complete police checks on the following people in "
                f"connection with case {case}:",
                f"Cafcass has been asked to provide a safeguarding letter in case {case}. "
                "Please could you carry out PNC and local checks on:",
                "We would be grateful if you could check your records for the following:",
                "Please find below the details for the safeguarding checks we need:"]),
        "",
        rows,
        "",
        g.pick(["The first hearing is on " + g.long_date() + ", so we need the response by "
                + g.long_date() + ".",
                "Please reply to this address by secure email.",
                "Many thanks for your help.", ""]),
        "",
        "Kind regards,\nJo Bloggs\nFamily Court Adviser, Cafcass",
    )
    return subject, body


def _request_form(g: _Gen) -> tuple[str, str, str]:
    """A request form with blank boxes for the agency to fill in (goes to the agency)."""
    surname, forename = g.upper_person()
    form = g.lines(
        g.pick(["CAFCASS SAFEGUARDING CHECK REQUEST", "Request for safeguarding information",
                "Police check request form", "Local authority checks - request form"]),
        f"Case number: {g.case()}",
        f"Date of request: {g.date()}",
        f"Surname: {surname}",
        f"Forename(s): {forename}",
        f"Date of birth: {g.dob()}",
        f"Address: {g.r.randint(1, 90)} Station Road",
        "",
        "TO BE COMPLETED BY THE AGENCY",
        g.pick(["Trace: Yes / No", "Trace: ____", "Trace:"]),
        g.pick(["Information held: Yes / No", "Information held:", "Information held: Y/N"]),
        g.pick(["Result:", "Result: ________", "Result (delete as appropriate): trace / no trace"]),
        "Checked by:",
        "Date checked:",
        g.maybe("Please return this form by secure email within 10 working days."),
    )
    subject = g.pick(["Safeguarding check request", "Checks request form", "Request form"])
    body = g.pick(["Please find attached our request for safeguarding checks.",
                   "Please find attached the request form for police checks.",
                   "Attached is the checks request form. Please return it completed.",
                   "Hello, the completed request form is attached."])
    return subject, body, form


def _status_note(g: _Gen) -> tuple[str, str]:
    case = g.case()
    agency = g.pick(["police", "local authority", "LA", "police and local authority", "PNC",
                     "health visitor", "safeguarding"])
    sentences = [
        f"We have requested {agency} checks and are awaiting the results.",
        f"The {agency} checks are outstanding; we expect them by {g.long_date()}.",
        f"{agency.capitalize()} checks have been requested but not yet received, so the "
        "safeguarding letter will be filed late.",
        f"I am chasing the {agency} checks today.",
        "Once we receive the checks we will file our safeguarding letter.",
        "The police disclosure has not yet arrived. I chased "
        f"{g.pick(['Kent Police', 'the Met', 'the force'])} "
        "again this morning.",
        "Cafcass will need a further 14 days as the checks are still outstanding.",
        "Checks with the police and children's services are under way.",
        "Please note we cannot file the safeguarding letter until the checks are complete.",
        f"The health visitor records were requested on {g.long_date()}.",
        "We are still waiting for a response to our request for police information.",
        "Police checks are pending and I will update the court as soon as I hear.",
        "I have asked the local authority whether the family is known to them.",
        "Could you confirm whether your client has consented to the health visitor records "
        "being requested?",
        "The court asked whether police checks have been completed: they have not.",
        "Checks will be repeated because more than three months have passed.",
        "We are awaiting the police check results and will file the letter once they arrive.",
        "I will let you know the outcome of the police check as soon as I can.",
        "The local authority check results are not back yet.",
        "Nothing has come back from the result of police checks so far.",
        "Our request for a PNC print is still with the force.",
        "Could you tell me whether the Police National Computer check has been done?",
        "I have asked the police disclosure unit for an update.",
        "We need the health visitor records before we can complete the safeguarding letter.",
    ]
    greeting = g.pick(["Dear Ms " + g.pick(LAST) + ",", "Dear Sir/Madam,", "Hi,",
                       "Dear Court Manager,", "Good afternoon,"])
    body = g.lines(greeting, "", f"Re: {case}", "", *g.some(sentences, 2, 4), "",
                   "Kind regards,", "Jo Bloggs", "Family Court Adviser")
    subject = g.pick([f"{case} - update", "Safeguarding letter - delay", "Checks update",
                      f"RE: {case} safeguarding", "Police checks", "Update on checks",
                      "Police disclosure", "Re: police disclosure", "LA checks",
                      "RE: Police check results?", "Re: LA check result - timescale"])
    return subject, body


def _to_parent(g: _Gen) -> tuple[str, str]:
    body = g.lines(
        f"Dear {g.pick(['Mr', 'Ms', 'Mrs'])} {g.pick(LAST)},",
        "",
        g.pick([
            "Before your first hearing Cafcass will check with the police and children's "
            "services whether they hold any information about your family.",
            "As part of our work we carry out safeguarding checks with the police and the local "
            "authority. We will talk to you about anything they tell us.",
            "I will be calling you on " + g.long_date() + " to talk about the checks we do and "
            "any worries you have.",
            "The police and local authority checks are a normal part of our work and do not "
            "mean anyone has done anything wrong.",
        ]),
        g.maybe("If you have any convictions or cautions, it helps if you tell us about them "
                "when we speak."),
        g.maybe("You may wish to seek independent legal advice."),
        "",
        "Yours sincerely,",
        "Jo Bloggs, Family Court Adviser",
    )
    return g.pick(["Your telephone appointment", "Cafcass - next steps", "Safeguarding checks",
                   "Your case", "Information about checks"]), body


def _safeguarding_letter(g: _Gen) -> tuple[str, str]:
    """Cafcass's own summary: allowed to families and the court (App. 2, safeguarding letters)."""
    force, _ = g.force()
    council, _ = g.r.choice(COUNCILS)
    mother, father = g.person(), g.person()
    police = g.pick([
        f"{force} informed Cafcass that {father} has a conviction for "
        f"{g.pick(OFFENCES).lower()} in {g.r.randint(2012, 2024)}.",
        f"The police told us that there were two domestic incidents at the family home in "
        f"{g.r.randint(2019, 2025)}; no further action was taken.",
        "Police checks returned no trace for either parent.",
        f"{force} disclosed that {father} received a caution in {g.r.randint(2010, 2022)}.",
        "Police information shows a non-molestation order was made in 2023.",
        f"{force}'s disclosure unit told us that {father} was arrested in "
        f"{g.r.randint(2015, 2024)} and released with no further action.",
        "A check of the Police National Computer showed no trace for either parent.",
        f"The safeguarding hub at {force} said officers attended a domestic incident at the "
        "address; no further action was taken.",
    ])
    local = g.pick([
        f"{council} told us the family is not known to children's social care.",
        f"The local authority informed us that the children were subject to a child protection "
        f"plan until {g.r.randint(2018, 2024)}.",
        "The local authority said there was a section 47 enquiry in 2022 which ended with no "
        "further action.",
        "Children's services have no current involvement.",
    ])
    body = g.lines(
        g.pick(["SAFEGUARDING LETTER", "Safeguarding letter to the court",
                "Cafcass safeguarding letter"]),
        g.maybe(f"Our ref: {g.case()}"),
        f"Case number: {g.case()}",
        f"Hearing date: {g.long_date()}",
        "",
        "1. Safeguarding checks",
        f"Cafcass has completed safeguarding checks with the police and the local authority "
        f"about {mother} and {father}.",
        police,
        local,
        "",
        "2. Conversations with the parents",
        f"I spoke to {mother} on {g.long_date()}. She said she has no worries about contact.",
        g.maybe(f"{father} told me about the conviction and said he has completed a course."),
        "",
        "3. Recommendation",
        "Cafcass recommends that the court lists the matter for a dispute resolution "
        "appointment.",
        "",
        "Jo Bloggs, Family Court Adviser",
        g.maybe("This letter is confidential. It must not be shared with anyone who is not a "
                "party without the consent of the court."),
    )
    subject = g.pick(["Safeguarding letter", "Safeguarding letter - " + g.case(), "FHDRA letter"])
    return subject, body


def _court_analysis(g: _Gen) -> tuple[str, str]:
    force, _ = g.force()
    body = g.lines(
        "Section 7 report - analysis",
        "",
        "Police information",
        f"{force} disclosed that officers attended the family home on three occasions between "
        f"{g.r.randint(2019, 2022)} and {g.r.randint(2023, 2025)}. On each occasion no further "
        "action was taken.",
        g.maybe(f"The father has convictions for {g.pick(OFFENCES).lower()} and was sentenced "
                "to a community order."),
        "",
        "Local authority information",
        "The children were known to children's social care between 2021 and 2022 under a "
        "child in need plan.",
        "",
        "Analysis",
        "I have weighed the welfare checklist ...",
    )
    return g.pick(["Section 7 report", "Addendum report", "Position statement"]), body


def _other_checks(g: _Gen) -> tuple[str, str]:
    subject, body = g.r.choice([
        ("DBS check - new volunteer",
         "Hi,\nThe enhanced DBS check for our new volunteer came back clear with no convictions "
         "or cautions recorded. Please update the HR record.\nThanks"),
        ("Right to work checks", "Please complete the right to work checks before Monday. "
         "The checklist is attached."),
        ("Fire alarm test", "The weekly fire alarm check will take place at 10am on Wednesday."),
        ("Welfare check", "The police carried out a welfare check on the office after the "
         "alarm; nothing was found and no further action is needed."),
        ("Spell check", "Please run a spell check on the report before filing it."),
        ("IT checks", "IT will run system checks overnight; the case management system will "
         "be unavailable from 8pm."),
        ("Diary", "Could you check your diary for a meeting on " + g.long_date() + "?"),
        ("Vehicle checks", "Pool car safety checks are due; record the results in the log book."),
        ("Audit", "The case file audit checked 40 records; no issues were found."),
    ])
    return subject, body


def _police_ack(g: _Gen) -> tuple[str, str, str]:
    force, domain = g.force()
    name, address = g.officer(domain)
    body = g.lines(
        "Good morning,",
        "",
        g.pick([
            "Thank you for your request for police checks. It has been logged and will be "
            "completed within 20 working days.",
            "We acknowledge receipt of your safeguarding check request. Please allow 15 working "
            "days for a response.",
            "Before we can process the checks we need the signed consent form from each party.",
            "Your request has been passed to the disclosure team, who will search our systems "
            "and reply directly.",
            "Unfortunately the request does not include dates of birth, so we cannot carry out "
            "the checks. Please resend it with full details.",
        ]),
        "",
        f"Regards,\n{name}\n"
        f"{g.pick(['Safeguarding Hub', 'Disclosure Team', 'Family Court Unit'])}, {force}",
    )
    return g.pick(["RE: Police checks", "Re: Safeguarding check request", "Acknowledgement"]), \
        body, address


def _council_ack(g: _Gen) -> tuple[str, str, str]:
    council, domain = g.r.choice(COUNCILS)
    _name, address = g.officer(domain)
    body = g.lines(
        "Hello,",
        g.pick([
            "We have received your request for local authority checks and will respond within "
            "10 working days.",
            "Please could you send us the children's full names and dates of birth so that we "
            "can check our records?",
            "The duty team is very busy; checks are currently taking three weeks.",
            "Can you confirm whether the parents have consented to the checks?",
        ]),
        f"Thanks,\nFront Door team, {council}",
    )
    return "RE: LA checks request", body, address


def _health_ack(g: _Gen) -> tuple[str, str, str]:
    trust, domain = g.r.choice(TRUSTS)
    _name, address = g.officer(domain)
    body = g.lines(
        "Hi,",
        g.pick([
            "We have received your request for health visitor records. These need the "
            "consent of the parent with parental responsibility.",
            "I will check our records once the consent form is returned.",
            "The health visitor is on leave until next week; I will ask her to respond to your "
            "request then.",
        ]),
        f"Safeguarding Children Team, {trust}",
    )
    return "RE: Health visitor records request", body, address


def _court_order_forward(g: _Gen) -> tuple[str, str, str]:
    court, address = g.r.choice(COURTS)
    body = g.lines(
        f"{court}",
        "Case " + g.case(),
        "ORDER",
        "1. Cafcass shall file a safeguarding letter by " + g.long_date() + ".",
        g.pick(["2. The applicant shall obtain police disclosure of any callouts to the family "
                "home in the last two years.",
                "2. Police disclosure is to be filed and served by 4pm on " + g.long_date() + ".",
                "2. The non-molestation order made on " + g.long_date() + " continues.",
                "2. The local authority shall file a section 7 report; any police checks are to "
                "be completed first."]),
        g.maybe("3. The father's criminal convictions, if any, shall be disclosed in his "
                "statement."),
        "4. The matter is listed for a dispute resolution appointment.",
    )
    return "Sealed order - " + g.case(), body, address


def _solicitor_forward(g: _Gen) -> tuple[str, str, str]:
    address = f"{g.pick(['partner', 'j.harris', 'family'])}@{g.pick(FIRMS)}"
    body = g.lines(
        "Dear Cafcass,",
        g.pick([
            "Our client has a caution from 2015 which he has disclosed in his statement. We "
            "would ask that the police checks are completed before the hearing.",
            "We understand the police checks are outstanding. Please confirm when the "
            "safeguarding letter will be filed.",
            "Our client denies the incidents alleged and asks that police disclosure be "
            "obtained.",
            "Please note our client has no convictions and we would be grateful if the local "
            "authority checks could be expedited.",
        ]),
        "Yours faithfully,",
        "Harrison Solicitors",
        "Our ref: JH/" + str(g.r.randint(1000, 9999)),
        "This email is confidential and may be legally privileged. If you are not the intended "
        "recipient please delete it.",
    )
    return "Re: " + g.case(), body, address


# ----------------------------------------------------------------------------------------------
# Original results
# ----------------------------------------------------------------------------------------------


def _pnc_print(g: _Gen) -> str:
    surname, forename = g.upper_person()
    year = g.r.randint(0, 24)
    entries = []
    for _ in range(g.r.randint(1, 3)):
        entries.append(g.lines(
            f"Offence: {g.pick(OFFENCES)}",
            f"Date of conviction: {g.date()}",
            f"Court: {g.pick(['Leeds', 'Maidstone', 'Bristol', 'Stratford'])} Magistrates' Court",
            f"Disposal: {g.pick(DISPOSALS)}",
        ))
    return g.lines(
        g.pick(["POLICE NATIONAL COMPUTER", "PNC PRINT - CONVICTIONS, CAUTIONS AND REPRIMANDS",
                "Police National Computer - Phoenix print"]),
        f"PNC ID: {year:02d}/{g.r.randint(1, 999999)}{g.pick('ABCDEFGH')}",
        g.maybe(f"CRO Number: {g.r.randint(1000, 999999)}/{year:02d}K"),
        f"Surname: {surname}",
        f"Forename(s): {forename}",
        f"Date of birth: {g.dob()}",
        f"Convictions: {len(entries)}   Cautions: {g.r.randint(0, 2)}",
        "",
        *entries,
        g.maybe("Warning markers: Violent; Weapons"),
        g.maybe("This print is provided for the purposes of the Cafcass safeguarding check only "
                "and must not be disclosed to any third party."),
    )


def _police_letter(g: _Gen) -> str:
    force, _ = g.force()
    found = g.r.random() < 0.6
    incidents = []
    if found:
        for _ in range(g.r.randint(1, 3)):
            incidents.append(g.lines(
                f"Incident date: {g.date()}",
                f"Occurrence number: {g.r.randint(10, 99)}/{g.r.randint(10000, 99999)}/"
                f"{g.r.randint(19, 25)}",
                "Incident type: " + g.pick(['Domestic - verbal argument', 'Domestic - assault',
                                            'Concern for welfare',
                                            'Breach of non-molestation order']),
                "Outcome: " + g.pick(['No further action',
                                      'Arrested, released under investigation',
                                      'Words of advice', 'Charged']),
            ))
    lines = [
        f"{force}",
        g.pick(["Public Protection Unit", "Disclosure Unit", "Safeguarding Hub",
                "Multi Agency Safeguarding Hub", "Family Court Disclosure Team"]),
        g.maybe(f"Your ref: {g.case()}"),
        g.maybe(f"Date of request: {g.date()}"),
        "",
        "Dear Cafcass,",
        f"RE: Safeguarding check - {g.person()} and {g.person()}",
        g.pick(["In response to your request, the following systems have been searched: PNC, "
                "PND, Niche and STORM.",
                "Searches have been conducted on police systems for the persons named.",
                "Further to your request, I can confirm the results of police checks below."]),
        "",
        "Result: " + ("Information held" if found else "No trace"),
        *incidents,
        "",
        g.pick(["This information is provided for safeguarding purposes only and must not be "
                f"disclosed to any third party without the consent of {force}.",
                "This information is provided in confidence and should not be shared with the "
                "parties.",
                ""]),
        f"{g.person()}, Disclosure Officer",
    ]
    result = lines.index("Result: " + ("Information held" if found else "No trace"))
    kept = g.some([line for at, line in enumerate(lines) if at != result], len(lines) - 4,
                  len(lines) - 1)
    return g.lines(*kept[:6], lines[result], *kept[6:])


def _police_email(g: _Gen) -> str:
    father, mother = g.person(), g.person()
    return g.lines(
        g.pick(["Hi,", "Good afternoon,", "Hello Jo,"]),
        "",
        g.pick([
            f"Checks completed on both parties. {mother}: no trace. {father}: two domestic "
            f"incidents recorded, {g.r.randint(2019, 2022)} and {g.r.randint(2023, 2025)}, "
            "both NFA.",
            f"I have checked PNC and local systems. No trace for {mother}. {father} has one "
            f"conviction for {g.pick(OFFENCES).lower()} ({g.r.randint(2010, 2024)}).",
            "Results of checks: nothing known on either party.",
            f"Local checks show {father} was arrested in {g.r.randint(2015, 2025)} for "
            "criminal damage at the address; no further action.",
            f"Please see below: PNC - {father} convicted {g.date()} of {g.pick(OFFENCES).lower()}, "
            f"{g.pick(DISPOSALS).lower()}. {mother} no trace.",
        ]),
        "",
        g.maybe("Any questions, please call."),
        "Regards,",
        g.pick(["PC ", "DC ", "", "Sgt "]) + g.person(),
    )


def _council_response(g: _Gen) -> str:
    council, _ = g.r.choice(COUNCILS)
    known = g.r.random() < 0.6
    details = ([
        f"Involvement: Child in need plan {g.r.randint(2016, 2021)}-{g.r.randint(2022, 2024)}",
        f"Section 47 enquiry: {g.date()} - no further action",
        f"Category of plan: {g.pick(['Neglect', 'Emotional abuse', 'Physical abuse'])}",
        f"Allocated social worker: {g.person()}",
        f"Referral history: {g.r.randint(2, 6)} referrals since {g.r.randint(2012, 2020)}",
    ] if known else [
        "Involvement: None",
        "No previous involvement recorded.",
    ])
    lines = [
        g.pick(["LOCAL AUTHORITY CHECKS RESPONSE", "Response to Cafcass safeguarding checks",
                f"{council} - Children's Services", "Integrated Front Door - checks response"]),
        g.maybe(f"Your ref: {g.case()}"),
        f"Date checked: {g.date()}",
        g.pick(["Systems checked: Liquidlogic (LCS), EHM", "Systems checked: Mosaic",
                "Systems searched: CareFirst, Eclipse"]),
        f"Child(ren): {g.person()}, {g.person()}",
        "Known to Children's Social Care: " + ("Yes" if known else "No"),
        *details,
        g.maybe("This information must not be shared with the parties without the consent of "
                "the local authority."),
        g.maybe(f"Checked by: {g.person()}, Duty Social Worker"),
    ]
    return g.lines(*lines)


def _council_email(g: _Gen) -> str:
    return g.lines(
        "Hi,",
        g.pick([
            "The family is known to children's social care. There was a section 47 enquiry in "
            f"{g.r.randint(2018, 2024)} and the children were on a child protection plan for "
            "neglect for nine months.",
            "I've checked our records: the family is not known to children's social care.",
            "Mother was known to us as a care leaver; no current involvement with the children.",
            f"We have {g.r.randint(2, 5)} referrals on record, the last in "
            f"{g.r.randint(2020, 2025)}; the case was closed to children's social care after "
            "a child and family assessment.",
        ]),
        g.pick(["Thanks,", "Kind regards,"]),
        f"{g.person()}, Front Door",
    )


def _health_record(g: _Gen) -> str:
    trust, _ = g.r.choice(TRUSTS)
    lines = [
        g.pick(["Health Visiting Service", "0-19 Public Health Nursing Service",
                "Child health record - extract", "Health visitor records"]),
        trust,
        f"Child: {g.person()}   NHS number: 943 476 5919",
        g.pick(["Record system: SystmOne", "Source: RiO", "Extracted from EMIS"]),
        f"New birth visit: {g.date()} - {g.pick(['no concerns', 'mother low mood noted'])}",
        "Development review (9-12 months): " + g.pick(['completed, development on track',
                                                      'did not attend', 'was not brought']),
        f"Immunisations: {g.pick(['up to date', 'two missed appointments'])}",
        f"Health visitor: {g.person()}",
        "Safeguarding concerns: " + g.pick(
            ['none noted', 'domestic abuse disclosed by mother, referral made to MASH']),
        g.maybe("Provided in confidence for the purpose of the Cafcass safeguarding check."),
    ]
    return g.lines(*g.some(lines, len(lines) - 2, len(lines)))


def _health_email(g: _Gen) -> str:
    return g.lines(
        "Hi,",
        g.pick([
            "I've checked our records (SystmOne): the child was seen for the two-year "
            "development review, immunisations are up to date and no safeguarding concerns were "
            "noted.",
            "The health visitor records show the child was not brought to three appointments "
            "in 2024 and concerns were noted about home conditions.",
            "From our records: new birth visit completed, mother disclosed domestic abuse, "
            "referral made to children's social care.",
        ]),
        "Regards,",
        "Safeguarding Children Team",
    )


def _result_form(g: _Gen) -> str:
    return g.lines(
        g.pick(["SAFEGUARDING CHECKS RESULT", "Safeguarding check result", "Result of checks"]),
        f"Agency: {g.pick([n for n, _ in FORCES] + [n for n, _ in COUNCILS])}",
        f"Date checked: {g.date()}",
        f"Subject: {g.person()} (DOB {g.dob()})",
        "Result: " + g.pick(["No trace", "Trace - see attached", "Information held"]),
        f"Checked by: {g.person()}",
    )


# ----------------------------------------------------------------------------------------------
# Messages
# ----------------------------------------------------------------------------------------------


def _message(subject: str, body: str, to: Sequence[str], attachments: Sequence[
        tuple[str, str, bytes]] = (), forwarded: EmailMessage | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Jo Bloggs <{STAFF}>"
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg.set_content(body)
    for name, ctype, data in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    if forwarded is not None:
        msg.add_attachment(forwarded)
    return msg.as_bytes(policy=SMTP)


def _inner(author: str, subject: str, body: str) -> EmailMessage:
    inner = EmailMessage()
    inner["From"] = author
    inner["To"] = STAFF
    inner["Subject"] = subject
    inner["Date"] = "Mon, 05 Jan 2026 10:00:00 +0000"
    inner.set_content(body)
    return inner


def _forwarded(g: _Gen, channel: str, author: str, inner_subject: str, inner_body: str,
               top: str) -> tuple[str, str, EmailMessage | None]:
    """(subject, body, attached message) of `inner_body` forwarded by the sender."""
    display = g.person()
    if channel == "rfc822":
        return "FW: " + inner_subject, top, _inner(f"{display} <{author}>", inner_subject,
                                                   inner_body)
    if channel == "outlook":
        block = g.lines("-----Original Message-----" if g.r.random() < 0.5 else "",
                        f"From: {display} <{author}>",
                        "Sent: 05 January 2026 10:00",
                        f"To: Bloggs, Jo <{STAFF}>",
                        f"Subject: {inner_subject}", "")
        return "FW: " + inner_subject, g.lines(top, "", block, inner_body), None
    if channel == "gmail":
        block = g.lines("---------- Forwarded message ---------",
                        f"From: {display} <{author}>",
                        "Date: Mon, 5 Jan 2026 at 10:00",
                        f"Subject: {inner_subject}",
                        f"To: <{STAFF}>", "")
        return "Fwd: " + inner_subject, g.lines(top, "", block, inner_body), None
    # a reply quoting the agency's message
    quoted = "\n".join("> " + line for line in inner_body.splitlines())
    return "RE: " + inner_subject, g.lines(
        top, "", f"On Mon, 5 Jan 2026 at 10:00, {display} <{author}> wrote:", quoted), None


_TOPS = ["FYI", "Please see below.", "Forwarding for your information.",
         "See the response below.", "", "As discussed, please see below.",
         "Please see the response we received."]
_EXTERNAL = ["j.harris@smithlaw.co.uk", "leeds.familycourt@justice.gov.uk",
             "mum.parent@gmail.com", "partner@family-law-partners.co.uk"]

Builder = Callable[[_Gen], Sample]


def _negative_samples(g: _Gen) -> list[Builder]:
    def own(template: Callable[[_Gen], tuple[str, str]], kind: str) -> Builder:
        def build(g: _Gen) -> Sample:
            subject, body = template(g)
            to = (g.pick(_EXTERNAL),)
            return Sample(kind, "own", False, _message(subject, body, to), to)
        return build

    def request_form(g: _Gen) -> Sample:
        subject, body, form = _request_form(g)
        to = (f"checks@{g.force()[1]}",)
        attachment = (("request.pdf", "application/pdf", make_pdf([form]))
                      if g.r.random() < 0.3 else ("request.txt", "text/plain", form.encode()))
        return Sample("request-form", "attachment", False,
                      _message(subject, body, to, [attachment]), to)

    def request_to_police(g: _Gen) -> Sample:
        subject, body = _request_to_police(g)
        to = (f"checks@{g.force()[1]}",)
        return Sample("request", "own", False, _message(subject, body, to), to)

    def forwarded_ack(template: Callable[[_Gen], tuple[str, str, str]], kind: str) -> Builder:
        def build(g: _Gen) -> Sample:
            inner_subject, inner_body, author = template(g)
            channel = g.pick(["rfc822", "outlook", "gmail", "reply"])
            subject, body, inner = _forwarded(g, channel, author, inner_subject, inner_body,
                                              g.pick(_TOPS))
            to = (g.pick(_EXTERNAL),)
            return Sample(kind, channel, False, _message(subject, body, to, forwarded=inner), to)
        return build

    def safeguarding_letter_pdf(g: _Gen) -> Sample:
        subject, letter = _safeguarding_letter(g)
        to = (g.pick(_EXTERNAL),)
        body = g.pick(["Please find attached the safeguarding letter.",
                       "Please find attached my safeguarding letter, which summarises the "
                       "police and local authority checks.",
                       "Attached is the safeguarding letter for the hearing."])
        return Sample("safeguarding-letter", "pdf", False,
                      _message(subject, body, to, [("letter.pdf", "application/pdf",
                                                    make_pdf([letter]))]), to)

    return [
        own(_status_note, "status"), own(_status_note, "status"), own(_status_note, "status"),
        own(_to_parent, "to-parent"), own(_safeguarding_letter, "safeguarding-letter"),
        own(_court_analysis, "court-analysis"), own(_other_checks, "other-checks"),
        request_to_police, request_form, safeguarding_letter_pdf,
        forwarded_ack(_police_ack, "police-ack"), forwarded_ack(_council_ack, "council-ack"),
        forwarded_ack(_health_ack, "health-ack"),
        forwarded_ack(_court_order_forward, "court-order"),
        forwarded_ack(_solicitor_forward, "solicitor-letter"),
    ]


def _positive_samples(g: _Gen) -> list[Builder]:
    def attached(document: Callable[[_Gen], str], kind: str, names: Sequence[str]) -> Builder:
        def build(g: _Gen) -> Sample:
            text = document(g)
            to = (g.pick(_EXTERNAL),)
            body = g.pick(["Please see attached.", "Attached for your information.",
                           "Hi, as requested.", "Please find the attached document.", ""])
            name = g.pick(names)
            if g.r.random() < 0.5:
                attachment = (name + ".pdf", "application/pdf", make_pdf([text]))
                channel = "pdf"
            else:
                attachment = (name + ".txt", "text/plain", text.encode())
                channel = "text-attachment"
            raw = _message(g.pick(["Documents", "Case papers", g.case(), "As requested"]),
                           body or "Hi", to, [attachment])
            return Sample(kind, channel, True, raw, to)
        return build

    def forwarded(document: Callable[[_Gen], str], kind: str,
                  domains: Callable[[_Gen], str], subjects: Sequence[str]) -> Builder:
        def build(g: _Gen) -> Sample:
            text = document(g)
            _name, author = g.officer(domains(g))
            channel = g.pick(["rfc822", "outlook", "gmail", "reply"])
            subject, body, inner = _forwarded(g, channel, author, g.pick(subjects), text,
                                              g.pick(_TOPS))
            to = (g.pick(_EXTERNAL),)
            return Sample(kind, channel, True, _message(subject, body, to, forwarded=inner), to)
        return build

    def pasted(document: Callable[[_Gen], str], kind: str) -> Builder:
        def build(g: _Gen) -> Sample:
            text = document(g)
            to = (g.pick(_EXTERNAL),)
            top = g.pick(["Please find the police check results below.",
                          "Please find below the PNC print for the father.",
                          "Below are the LA checks response details:",
                          "Please find below the health visitor records.",
                          "Here is what came back:", "See below."])
            return Sample(kind, "pasted", True, _message(g.pick(["Checks", "Update", g.case()]),
                                                         g.lines(top, "", text), to), to)
        return build

    def handed_over(g: _Gen) -> Sample:
        to = (g.pick(_EXTERNAL),)
        body = g.pick(["Please find attached the police check results.",
                       "Please find attached the PNC print for Mr " + g.pick(LAST) + ".",
                       "I attach the LA checks response.",
                       "Attached are the health visitor records you asked for.",
                       "Please find enclosed the police disclosure."])
        scan = ("scan.jpg", "image/jpeg", b"\xff\xd8\xff\xe0" + bytes(g.r.randrange(256)
                                                                       for _ in range(2000)))
        return Sample("handed-over-scan", "own", True, _message("Checks", body, to, [scan]), to)

    police = lambda g: g.force()[1]  # noqa: E731 - a one-line slot
    council = lambda g: g.r.choice(COUNCILS)[1]  # noqa: E731
    trust = lambda g: g.r.choice(TRUSTS)[1]  # noqa: E731
    return [
        attached(_pnc_print, "pnc-print", ["PNC", "pnc_print", "scan0001", "Father"]),
        attached(_police_letter, "police-letter", ["disclosure", "police", "doc1", "response"]),
        attached(_council_response, "council-response", ["LA_checks", "response", "doc2"]),
        attached(_health_record, "health-record", ["HV", "records", "doc3"]),
        attached(_result_form, "result-form", ["result", "form", "checks"]),
        forwarded(_police_email, "police-email", police,
                  ["RE: Police checks", "Checks", "RE: Safeguarding check request", "Results"]),
        forwarded(_police_letter, "police-letter", police, ["Disclosure", "RE: Checks"]),
        forwarded(_council_email, "council-email", council,
                  ["RE: LA checks request", "Checks", "RE: Safeguarding"]),
        forwarded(_council_response, "council-response", council, ["Checks response"]),
        forwarded(_health_email, "health-email", trust, ["RE: HV records", "Records"]),
        forwarded(_health_record, "health-record", trust, ["Records", "HV records"]),
        pasted(_pnc_print, "pnc-print"), pasted(_police_letter, "police-letter"),
        pasted(_council_response, "council-response"),
        handed_over,
    ]


def corpus(seed: int, negatives: int = 600, positives: int = 300) -> list[Sample]:
    """`negatives` ordinary messages and `positives` results, deterministic for `seed`."""
    g = _Gen(random.Random(seed))
    negative, positive = _negative_samples(g), _positive_samples(g)
    samples = [g.r.choice(negative)(g) for _ in range(negatives)]
    samples += [g.r.choice(positive)(g) for _ in range(positives)]
    return samples


# ----------------------------------------------------------------------------------------------
# A hand-written hold-out set: written after the rules were tuned on the generated corpus, in
# other words than the templates, and never tuned on. Its figures are reported apart.
# (positive, channel, author of the forwarded text or "", subject, text)
# ----------------------------------------------------------------------------------------------

HOLDOUT: tuple[tuple[bool, str, str, str, str], ...] = (
    (False, "own", "", "FHDRA Tuesday",
     "Hi Sam,\nJust to let you know the police have still not responded to our checks request "
     "from three weeks ago. I'll escalate to my manager. The FHDRA is next Tuesday.\nJo"),
    (False, "outlook", "k.osei@osei-family-law.co.uk", "Safeguarding letter",
     "We note from the safeguarding letter that the police hold information about our client. "
     "Our client accepts he received a caution in 2017 for a public order offence and asks "
     "that Cafcass be told this is now spent.\nOsei Family Law"),
    (False, "rfc822", "listing.familycourt@justice.gov.uk", "Checks?",
     "The Judge has asked whether Cafcass's checks have come back and whether there are any "
     "safeguarding concerns. Please respond by close of play.\nListing Office"),
    (False, "own", "", "Our conversation today",
     "Dear Ms Ahmed,\nThank you for talking to me today. As I explained, I have now received "
     "information from the police and the local authority, which I will set out in my letter "
     "to the court. You will get a copy of that letter.\nYours sincerely\nJo Bloggs"),
    (False, "own", "", "ZC12C00123",
     "Cafcass has received the police information but is awaiting the local authority "
     "response. An addendum will follow by 12 January."),
    (False, "rfc822", "hv.admin@nhs.net", "New request form",
     "Dear colleague, please could you send your request for health visitor information on "
     "the new form attached; we are no longer accepting the old template. Thank you."),
    (False, "outlook", "family.court.unit@wiltshire.police.uk", "RE: Checks",
     "Hi Jo, apologies for the delay, we have a backlog of around 400 family court requests. "
     "Yours is being worked on and should be with you by Friday."),
    (False, "own", "", "Safeguarding letter",
     "Cafcass asked the police and Bristol City Council about the family. The police hold no "
     "information about Ms Hughes. They told Cafcass about one incident in 2022 when Mr Hughes "
     "was arrested after an argument at the home; he was not charged. Bristol City Council "
     "said the children were supported under a child in need plan in 2021."),
    (False, "own", "", "Your DBS certificate",
     "Your DBS certificate has been received and shows no convictions. Welcome to the "
     "volunteer scheme; your induction is on Monday."),
    (False, "own", "", "Position statement",
     "Police disclosure: the court will see from the police disclosure in the bundle (C12) "
     "that there were four callouts. Cafcass's view is that a fact-finding hearing is needed."),
    (False, "own", "", "PNC/PND check request",
     "Surname: HUGHES\nForename: TOM\nDOB: 01/02/1990\nAddress: 4 Elm Road\nPNC ID (if known):\n"
     "Please carry out PNC and PND checks and return the results on the attached form."),
    (False, "own", "", "Known to your service?",
     "Could you please confirm whether the children are known to your service? We need to "
     "know whether there is a current child protection plan."),
    (False, "own", "", "Re: consent for health visitor records",
     "Mum has signed the consent form for the health visitor records; it is attached."),
    (False, "reply", "family.court.unit@wiltshire.police.uk", "RE: request",
     "We confirm receipt of your request, reference 2026/123.\nRegards, Family Court Unit"),
    (False, "gmail", "sarah.k1990@gmail.com", "what they said",
     "I have never been arrested and I don't have any convictions. The police never came to "
     "our house, whatever he says."),
    (True, "outlook", "ppu.referrals@wiltshire.police.uk", "Cafcass checks",
     "Cafcass ref ZC12C00123. Police checks completed 04/01/2026.\nSubject 1 (mother) - No "
     "trace PNC/PND/local.\nSubject 2 (father) - Trace: 3 x domestic related incidents "
     "2023-2025, one resulting in arrest for ABH, NFA'd on CPS advice.\nPlease do not share "
     "with the family."),
    (True, "attachment", "", "Documents",
     "HAMPSHIRE CONSTABULARY\nDISCLOSURE OF INFORMATION TO CAFCASS\nThe following information "
     "is disclosed under the Family Court protocol.\nNominal: JAMES, Peter DOB 03/04/1988\n"
     "Convictions: 1 x Battery (2019) - Fine\nCautions: None\nIntelligence: 2 reports linking "
     "nominal to drug supply (2021).\nThis disclosure is made in confidence and must not be "
     "copied or passed to any other party."),
    (True, "attachment", "", "Letter",
     "Dear Cafcass,\nSAFEGUARDING ENQUIRY RESPONSE\nOur records show that the children, A (5) "
     "and B (3), were open to Children's Social Care from June 2022 to March 2023 on a Child "
     "in Need basis following concerns about neglect. There is no current involvement. Please "
     "note this information is shared for the purposes of the safeguarding enquiry only.\n"
     "Duty and Assessment Team, Hampshire County Council"),
    (True, "rfc822", "hv.team@nhs.net", "HV",
     "Hello, I can confirm the family are registered with the health visiting team. The "
     "2-year review was completed in March; speech delay was noted and a referral made to "
     "SALT. There are no safeguarding concerns on our records. Regards, HV team"),
    (True, "own", "", "Checks",
     "Please see what Wiltshire sent: 'Subject 1 no trace. Subject 2 - 1 conviction 2016 "
     "criminal damage, conditional discharge. PND shows intelligence re DA in previous "
     "relationship.'"),
    (True, "attachment", "", "PNC",
     "PNC Record\nName: DOE, JOHN\nPNC ID: 05/123456X\nOffence(s): Possession with intent to "
     "supply Class A\nConviction date: 12/12/2012\nSentence: 3 years imprisonment\n"
     "Offence(s): Common assault\nConviction date: 01/06/2018\nSentence: Community Order"),
    (True, "reply", "duty.team@norfolk.gcsx.gov.uk", "RE: LA checks",
     "The family was known to us in 2019 (single assessment, closed NFA). Nothing since."),
    (True, "gmail", "disclosure@avonandsomerset.police.uk", "Results",
     "We have searched PNC, PND and local intelligence systems. Results: no trace for either "
     "party."),
    (True, "attachment", "", "HV chronology",
     "Health Visitor Chronology\n12/01/2024 Primary birth visit - mum tearful, EPDS 14\n"
     "03/03/2024 6-8 week review - DNA\n15/03/2024 Home visit - partner present, mum appeared "
     "anxious; DA enquiry not possible\nRecord held on SystmOne"),
    (True, "outlook", "dc.ward@merseyside.police.uk", "RE: Safeguarding check request",
     "Good morning. Mr Lee has an outstanding warrant and is wanted on PNC. Please contact the "
     "OIC, DC Ward, before any home visit."),
)


# A second hold-out set, written after the first had been used to add vocabulary, and measured
# once, untuned: its figures are the honest estimate for text in words nobody here chose.
HOLDOUT_2: tuple[tuple[bool, str, str, str, str], ...] = (
    (False, "own", "", "Safeguarding letter",
     "Further to our call, I can confirm we have now completed our safeguarding enquiries. The "
     "safeguarding letter will be filed on Friday and served on all parties."),
    (False, "own", "", "ZC12C00123 recommendation",
     "Cafcass has no safeguarding concerns arising from the checks and recommends that the "
     "matter proceeds to a dispute resolution appointment."),
    (False, "outlook", "mash.admin@lancashire.pnn.police.uk", "RE: request",
     "Please can you resend the request via CJSM? Our system rejected the attachment.\n"
     "Thanks, MASH admin"),
    (False, "rfc822", "practice.manager@nhs.net", "Records",
     "The GP practice has asked for a copy of the court order before releasing any records. "
     "Can you forward it?"),
    (False, "own", "", "Next steps",
     "As part of the assessment I will be speaking to your child's school and health visitor. "
     "I will also look at the information the police and children's services have given us."),
    (False, "own", "", "Strategy discussion",
     "We understand a strategy discussion took place last week. Could you tell us its outcome "
     "and whether a section 47 enquiry will follow?"),
    (False, "outlook", "kent.fc@justice.gov.uk", "Order",
     "IT IS ORDERED THAT:\n1. The Chief Constable of Kent Police shall disclose to the court "
     "all records of call-outs to 12 Elm Road between 2020 and 2025.\n2. Cafcass shall file an "
     "addendum safeguarding letter."),
    (False, "own", "", "Training reminder",
     "The new checks process starts on Monday. Please read the guidance on requesting police "
     "information through the portal."),
    (False, "reply", "ds.reid@cumbria.police.uk", "RE: Disclosure",
     "Thanks Jo, I'll ask the DS to review and come back to you. There may be a delay as the "
     "officer in the case is on leave."),
    (False, "attachment", "", "Safeguarding letter",
     "SAFEGUARDING LETTER\nPolice checks: Cafcass was told that Mr Reed has convictions for "
     "drink driving (2014) and common assault (2020).\nLocal authority checks: The family is "
     "not known.\nHealth: not requested.\nRecommendation: a dispute resolution appointment."),
    (True, "rfc822", "mash@lancashire.pnn.police.uk", "Re: Cafcass check - DEAN / LOWE",
     "DEAN, Carl: 4 recorded domestic incidents as suspect (2021-2024), 1 conviction for "
     "assault (2022).\nLOWE, Gemma: no trace.\nRegards, MASH"),
    (True, "attachment", "", "Disclosure",
     "Lancashire Constabulary - Police Disclosure to Cafcass\nSubject: Carl DEAN\nPNC: "
     "Convicted 14/02/2022 Assault by beating - 12 month community order.\nLocal systems: 4 "
     "domestic incidents (2021-2024), DASH risk: medium on 2 occasions.\nThis information must "
     "not be shared with the subject."),
    (True, "outlook", "childrens.services@lancashire.gcsx.gov.uk", "RE: LA check",
     "Good afternoon, I have checked our systems (Mosaic) and the children are currently "
     "subject to child in need plans due to parental substance misuse. Allocated SW is Jane "
     "Moss."),
    (True, "attachment", "", "Record check",
     "CHILDREN'S SERVICES RECORD CHECK\nDate of check: 02/01/2026\nChildren checked: Leo LOWE "
     "(2019), Mia LOWE (2021)\nKnown: Yes\nSummary of involvement: Referral 2023 (DV), single "
     "assessment, NFA.\nChecked by: Duty SW"),
    (True, "gmail", "hv.north@nhs.net", "HV records",
     "Dear Jo, our records show Mia was seen by the health visitor on 3 occasions in 2023; mum "
     "disclosed historic DV at the 1-year review. No current concerns."),
    (True, "attachment", "", "GP summary",
     "GP SUMMARY RECORD\nPatient: Gemma LOWE\nProblems: Depression (2019), alcohol misuse "
     "(2020)\nSafeguarding codes: Domestic abuse victim (2021)\nEMIS Web"),
    (True, "own", "", "PNC",
     "Please find below the PNC print:\nDEAN Carl 12/05/1990\n14/02/2022 Assault by beating - "
     "community order"),
    (True, "reply", "disclosure.team@cumbria.police.uk", "RE: checks",
     "Search completed. No trace on PNC, PND or Red Sigma for either party."),
    (True, "rfc822", "safeguarding.children@lancsteachinghospitals.nhs.uk", "Health checks",
     "Safeguarding Children Team here. Following your request, the children's health records "
     "show no safeguarding concerns. Immunisations are complete."),
    (True, "attachment", "", "Extract",
     "Police National Computer extract\nName: REED, Paul\nConvictions: 2\n  1) Drink driving "
     "2014 - disqualified 12 months, fine\n  2) Common assault 2020 - conditional discharge\n"
     "Cautions: 0"),
)


def holdout(batch: int = 1) -> list[Sample]:
    """The hand-written hold-out messages, built into real MIME as the corpus is."""
    g = _Gen(random.Random(0))
    samples = []
    for positive, channel, author, subject, text in (HOLDOUT, HOLDOUT_2)[batch - 1]:
        to = ("j.harris@smithlaw.co.uk",)
        if channel == "own":
            raw = _message(subject, text, to)
        elif channel == "attachment":
            raw = _message(subject, "Please see attached.", to,
                           [("document.pdf", "application/pdf", make_pdf([text]))])
        else:
            subject_, body, inner = _forwarded(g, channel, author, subject, text, "FYI")
            raw = _message(subject_, body, to, forwarded=inner)
        samples.append(Sample(f"holdout-{batch}", channel, positive, raw, to))
    return samples
