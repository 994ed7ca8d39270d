"""Hand-written word lists for the tiny corpus grammar (repro.inputs.tiny_corpus).

Kept apart from the grammar so that the generator reads end to end. Every topic owns its
nouns, verbs and adjectives, so a topic leaves a lexical trace an SAE feature can latch on to.
Words are chosen to inflect regularly (plural -s/-es, past -ed, third person -s), which keeps
the morphology rules in the grammar down to a few lines. Topics are listed by rank: the
grammar gives the first the highest Zipf weight.
"""

# (topic, nouns, verbs, adjectives); each field is a space-separated word list.
TOPICS: tuple[tuple[str, str, str, str], ...] = (
    ("cooking",
     "soup bread onion kettle recipe oven spoon garlic pepper basket noodle dumpling",
     "bake stir boil slice taste season roast simmer",
     "spicy salty crisp tender sweet bitter"),
    ("weather",
     "cloud storm wind rain forecast thunder breeze fog drizzle hailstone cyclone gust",
     "gather clear pour drift freeze howl shift spread",
     "cloudy humid chilly windy stormy mild"),
    ("sports",
     "match goal team player coach ball referee stadium trophy league whistle jersey",
     "kick score pass defend train cheer tackle dribble",
     "fast strong eager tired brave clumsy"),
    ("gardening",
     "seed flower root shovel tomato garden hedge weed compost sprout tulip trowel",
     "plant water prune dig harvest fertilize weed trim",
     "green leafy fresh wild thorny fragrant"),
    ("music",
     "song guitar drum melody chorus piano singer concert rhythm violin verse trumpet",
     "play sing tune record compose strum hum rehearse",
     "loud gentle catchy smooth soulful upbeat"),
    ("travel",
     "train ticket station suitcase map harbor passport hotel airport ferry tourist canal",
     "visit book pack explore wander board cross depart",
     "distant crowded scenic remote sunny foreign"),
    ("computing",
     "server laptop keyboard file program cable screen network router printer pixel cursor",
     "install compile reboot debug download encrypt upload format",
     "slow digital remote virtual secure broken"),
    ("medicine",
     "doctor patient fever tablet clinic nurse bandage vaccine symptom wound pulse syringe",
     "treat examine heal prescribe bandage cure test monitor",
     "sick healthy painful sterile swollen pale"),
    ("finance",
     "bank loan market price budget coin invoice account bond dividend ledger merchant",
     "invest borrow lend charge save audit trade deposit",
     "cheap costly wealthy steady risky frugal"),
    ("astronomy",
     "star planet comet moon orbit telescope galaxy nebula crater meteor eclipse asteroid",
     "observe orbit measure glow launch track spin collide",
     "bright faint cosmic lunar solar vast"),
    ("farming",
     "barn tractor cow field fence wheat plow hay goat orchard pig silo",
     "feed milk plow harvest herd graze sow fence",
     "muddy fertile rural dusty golden rocky"),
    ("law",
     "judge court lawyer verdict contract witness trial clause appeal jury statute deed",
     "argue sign appeal accuse settle testify review object",
     "legal fair guilty formal binding strict"),
    ("ocean",
     "wave boat sailor reef whale anchor tide shell dolphin lighthouse current coral",
     "sail float dive anchor fish paddle surf splash",
     "salty deep calm rough sandy coastal"),
    ("architecture",
     "bridge tower wall roof column arch window staircase beam dome facade chimney",
     "design build sketch restore measure paint support repair",
     "tall narrow modern ancient sturdy hollow"),
    ("chemistry",
     "acid flask crystal element atom beaker solvent metal powder vapor catalyst isotope",
     "heat mix dissolve filter react weigh distill boil",
     "toxic stable liquid acidic pure dense"),
    ("history",
     "empire king castle treaty scroll battle village ruin dynasty coin chronicle monument",
     "rule conquer sign defend discover record invade unite",
     "old royal forgotten famous medieval grand"),
    ("birds",
     "owl sparrow nest feather egg crow hawk beak parrot heron wing robin",
     "fly chirp hatch hunt perch nest migrate flutter",
     "tiny colorful noisy swift nocturnal shy"),
    ("trains",
     "engine track signal carriage platform tunnel whistle conductor rail depot boiler lever",
     "pull switch depart arrive shunt couple signal halt",
     "heavy rusty noisy punctual steam electric"),
    ("pottery",
     "clay bowl kiln glaze vase wheel jar pitcher mug tile brush slip",
     "shape fire glaze mold polish crack carve dry",
     "smooth glossy earthen fragile rustic thick"),
    ("chess",
     "pawn bishop knight rook queen board opening endgame gambit tournament clock square",
     "attack castle capture defend resign sacrifice pin checkmate",
     "clever quiet sharp passive tactical careful"),
    ("beekeeping",
     "hive bee honey comb queen smoker pollen swarm frame veil nectar drone",
     "inspect smoke gather extract collect buzz swarm guard",
     "sticky golden busy waxy calm amber"),
    ("mining",
     "mine shaft lantern ore pickaxe tunnel cart drill quarry seam helmet nugget",
     "dig blast haul drill sift smelt mine crush",
     "dark damp dusty narrow precious deep"),
    ("origami",
     "paper crane fold crease sheet pleat model diagram corner flap tuck petal",
     "fold crease unfold flatten tuck bend press turn",
     "crisp square delicate neat symmetric flat"),
    ("glaciology",
     "glacier crevasse moraine iceberg snowfield firn icecap meltwater cirque serac drumlin fjord",
     "calve melt advance retreat drill sample chart survey",
     "frozen polar icy blue thawing massive"),
)

# Roles the protagonist of a document can take, per topic index modulo this list's length.
ROLES: tuple[str, ...] = (
    "chef", "forecaster", "athlete", "gardener", "musician", "traveler", "programmer",
    "nurse", "banker", "astronomer", "farmer", "lawyer", "sailor", "architect", "chemist",
    "historian", "birdwatcher", "engineer", "potter", "player", "keeper", "miner", "folder",
    "scientist",
)

# Places a document can be set in; one is drawn per document and persists across it.
PLACES: tuple[str, ...] = (
    "the city", "the village", "the valley", "the island", "the north", "the coast",
    "the hills", "the capital", "the old town", "the harbor district", "the plains",
    "the mountains", "the river town", "the market square", "the eastern shore",
)

# Syllables for invented given names and family names; names are made up, never quoted.
ONSETS: tuple[str, ...] = (
    "b", "br", "d", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "r", "s", "st", "t", "th",
    "v", "w", "z",
)
NUCLEI: tuple[str, ...] = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "y")
CODAS: tuple[str, ...] = ("", "", "n", "r", "l", "s", "th", "nd", "rk", "x", "m", "v")

# Function-word material used by the sentence templates.
MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve",
)
PREPOSITIONS: tuple[str, ...] = (
    "near", "behind", "beside", "under", "above", "inside", "across", "beyond",
)
QUESTION_WORDS: tuple[str, ...] = ("Why", "When", "Where", "How")
UNITS: tuple[str, ...] = ("kg", "km", "liters", "meters", "grams", "hours", "degrees")
CODE_FUNCS: tuple[str, ...] = ("load", "parse", "count", "update", "merge", "sort", "check")
