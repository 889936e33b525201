//! Reading a shop's export (string codes, ISO dates, a BOM, junk rows, a catalogue with
//! `|`-separated categories) and splitting it.

use std::path::Path;

use vitrine_core::config::ConfigFile;
use vitrine_core::reporter::Silent;

use super::*;
use crate::config::resolve;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn config(dir: &Path, interactions: &str, extra: &str) -> RecommendConfig {
    let text = format!(
        "task = \"recommendation\"\n[data]\ninteractions = {{ file = \"{interactions}\", user = \"customer\", item = \"sku\", rating = \"stars\", timestamp = \"date\" }}\n{extra}\n[model]\nname = \"bpr-mf\"\n"
    );
    resolve(&ConfigFile::from_text(&dir.join("c.toml"), text).unwrap(), &[]).unwrap()
}

const ORDERS: &str = "\u{feff}customer,sku,stars,date\n\
    C001,SKU-1,5,2024-05-01\n\
    C001,SKU-2,4,2024-05-02 10:00:00\n\
    C002,SKU-1,2,2024-05-01\n\
    C002,SKU-3,5,2024-05-03\n\
    ,SKU-3,5,2024-05-03\n\
    C003,SKU-2,five,2024-05-03\n\
    C003,SKU-9,4,2024-05-04\n\
    C001,SKU-1,5,2024-05-01\n\
    C003,SKU-2,4,last week\n\
    C003,SKU-3,4,1714700000\n";

#[test]
fn bad_rows_are_named_by_line_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let orders = write(tmp.path(), "orders.csv", ORDERS);
    let catalogue = write(
        tmp.path(),
        "products.csv",
        "sku,name,category\nSKU-1,Phone,phones|android\nSKU-2,Case,accessories\nSKU-3,Charger,accessories|power\nSKU-4,Tablet,tablets\n",
    );
    let items = format!("items = {{ file = \"{catalogue}\", id = \"sku\", name = \"name\", multi = {{ category = \"|\" }} }}");
    let c = config(tmp.path(), &orders, &format!("implicit_threshold = 4\n{items}"));
    let mut users = IdMap::default();
    let mut items_map = IdMap::default();
    let features = read_features(c.data.items.as_ref().unwrap(), &mut items_map, false).unwrap().features;
    assert_eq!(items_map.ids(), ["SKU-1", "SKU-2", "SKU-3", "SKU-4"], "the catalogue's items, the unsold tablet too");
    assert!(features.vocabulary.contains(&"category=android".to_string()));
    assert_eq!(features.names.as_ref().unwrap()[3], "Tablet");

    let read = read_interactions(&c.data.interactions, &mut users, &mut items_map, true, Some(4.0), None, false).unwrap();
    let reasons: Vec<(u64, &str)> = read.skipped.iter().map(|s| (s.line, s.reason.as_str())).collect();
    assert!(reasons.contains(&(6, "`customer` is empty")), "{reasons:?}");
    assert!(reasons.iter().any(|(l, r)| *l == 7 && r.contains("`five`, not a number")), "{reasons:?}");
    assert!(reasons.iter().any(|(l, r)| *l == 8 && r.contains("`SKU-9` is not in the item file")), "{reasons:?}");
    assert!(reasons.contains(&(9, "repeats line 2 exactly")), "{reasons:?}");
    assert!(reasons.iter().any(|(l, r)| *l == 10 && r.contains("ISO-8601")), "{reasons:?}");
    assert_eq!(read.below_threshold, 1, "C002's 2-star rating is not positive feedback");
    assert_eq!(read.rows.len(), 4);
    assert_eq!(read.rows[1].time, parse_time("2024-05-02 10:00:00").unwrap());

    let err = read_interactions(&c.data.interactions, &mut users, &mut items_map, true, Some(4.0), None, true).unwrap_err();
    assert!(format!("{err:#}").contains("orders.csv: line 6"), "{err:#}");
}

#[test]
fn random_split_follows_recbole_counts_and_leave_one_out_follows_time() {
    // One customer with 25 interactions and one with 5.
    let rows: Vec<Interaction> = (0..30).map(|i| Interaction { user: u32::from(i >= 25), item: i, time: 100 - i as i64, line: i as u64 }).collect();
    let users = IdMap::from_ids(vec!["A".into(), "B".into()]);
    let (train, valid, test) = split_random(&rows, &users, 0.1, 0.1, 7);
    let count = |part: &[Interaction], user| part.iter().filter(|r| r.user == user).count();
    assert_eq!((count(&train, 0), count(&valid, 0), count(&test, 0)), (21, 2, 2), "floor(0.1 · 25) = 2 each");
    assert_eq!((count(&train, 1), count(&valid, 1), count(&test, 1)), (3, 1, 1), "fewer than ten still give one each");
    let mut all: Vec<u32> = train.iter().chain(&valid).chain(&test).map(|r| r.item).collect();
    all.sort();
    assert_eq!(all, (0..30).collect::<Vec<_>>());
    assert_eq!(split_random(&rows, &users, 0.1, 0.1, 7).2, test, "seeded");
    assert_ne!(split_random(&rows, &users, 0.1, 0.1, 8).2, test);
    // Customers numbered the other way round draw the same split.
    let swapped: Vec<Interaction> = rows.iter().map(|r| Interaction { user: 1 - r.user, ..*r }).collect();
    let other = IdMap::from_ids(vec!["B".into(), "A".into()]);
    let items_of = |part: &[Interaction], user: u32| -> Vec<u32> { part.iter().filter(|r| r.user == user).map(|r| r.item).collect() };
    assert_eq!(items_of(&split_random(&swapped, &other, 0.1, 0.1, 7).2, 1), items_of(&test, 0));

    let (train, valid, test) = split_leave_one_out(&rows, 2);
    // Times fall as items rise: the latest interaction of customer 0 is item 0.
    assert_eq!(test.iter().map(|r| r.item).collect::<Vec<_>>(), [0, 25]);
    assert_eq!(valid.iter().map(|r| r.item).collect::<Vec<_>>(), [1, 26]);
    assert_eq!(train.len(), 26);
    assert_eq!(sequences(&train, 2)[1], [29, 28, 27], "oldest first");
}

#[test]
fn a_shop_export_loads_from_its_config_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let orders = write(tmp.path(), "orders.csv", ORDERS);
    let c = config(tmp.path(), &orders, "split = { kind = \"leave-one-out\" }");
    let data = load_data(&c, &Silent).unwrap();
    assert_eq!(data.users.ids(), ["C001", "C002", "C003"]);
    assert_eq!(data.train.len() + data.valid.len() + data.test.len(), 6, "six good rows, none dropped without a threshold");
    assert!(data.notes.iter().any(|n| n.contains("skipped 4 bad row(s)")), "{:?}", data.notes);
}

#[test]
fn a_split_made_elsewhere_is_read_from_three_files() {
    let tmp = tempfile::tempdir().unwrap();
    let header = "customer,sku,stars,date\n";
    let train = write(tmp.path(), "train.csv", &format!("{header}C1,S1,5,2024-05-01\nC1,S2,4,2024-05-02\nC2,S1,5,2024-05-01\nC2,S3,3,2024-05-02\n"));
    let valid = write(tmp.path(), "valid.csv", &format!("{header}C1,S3,5,2024-05-03\n"));
    let test = write(tmp.path(), "test.csv", &format!("{header}C2,S4,5,2024-05-04\nC3,S1,5,2024-05-04\nC2,,5,2024-05-04\n"));
    let split = format!("split = {{ kind = \"files\", valid_file = \"{valid}\", test_file = \"{test}\" }}");
    let data = load_data(&config(tmp.path(), &train, &split), &Silent).unwrap();
    let named = |part: &[Interaction]| -> Vec<(String, String)> {
        part.iter().map(|r| (data.users.id(r.user).to_string(), data.items.id(r.item).to_string())).collect()
    };
    assert_eq!(named(&data.train).len(), 4, "the training file as it is");
    assert_eq!(named(&data.valid), [("C1".to_string(), "S3".to_string())]);
    assert_eq!(
        named(&data.test),
        [("C2".to_string(), "S4".to_string()), ("C3".to_string(), "S1".to_string())],
        "new items and customers of the test file join the maps"
    );
    assert!(data.notes.iter().any(|n| n.contains("data.split.test_file") && n.contains("1 bad row")), "{:?}", data.notes);

    // Half a split, or split files beside a random split, is refused by name.
    let text =
        |split: &str| format!("task = \"recommendation\"\n[data]\ninteractions = {{ file = \"{train}\", user = \"customer\", item = \"sku\" }}\n{split}\n");
    for (split, expect) in [
        (format!("split = {{ kind = \"files\", valid_file = \"{valid}\" }}"), "needs data.split.valid_file and data.split.test_file"),
        (format!("split = {{ kind = \"random\", valid_file = \"{valid}\", test_file = \"{test}\" }}"), "go with data.split.kind = \"files\""),
    ] {
        let err = resolve(&ConfigFile::from_text(&tmp.path().join("c.toml"), text(&split)).unwrap(), &[]).unwrap_err();
        assert!(format!("{err:#}").contains(expect), "{err:#}");
    }
}
