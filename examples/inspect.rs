fn main() {
    let path = std::env::args().nth(1).unwrap();
    let bytes = std::fs::read(path).unwrap();
    let reader = burn_pack::Reader::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes)).unwrap();
    for t in reader.into_tensors().unwrap() {
        let (name, dtype, shape, _, data) = t.into_parts().unwrap();
        if name.contains("class") || name.contains("time_embed") {
            let v: Vec<f32> = match dtype {
                burn_pack::DType::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                _ => continue,
            };
            let dims: Vec<usize> = shape.iter().copied().collect();
            if name.contains("class") {
                for r in v.chunks(*dims.last().unwrap()) {
                    let n: f32 = r.iter().map(|x| x * x).sum::<f32>().sqrt();
                    print!("{n:.3} ");
                }
                println!(" <- {name} row norms");
            } else {
                let n: f32 = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
                println!("{name} {dims:?} rms {n:.4}");
            }
        }
    }
}
